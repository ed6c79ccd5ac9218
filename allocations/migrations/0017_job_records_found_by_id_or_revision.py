"""Reconciliation finds new job records by their id and changed ones by a smaller change index (JobRecord.revised).

Each system's cursor takes the highest id of its records, and the records it has not reconciled yet are marked
revised, so that the next run finds them by the new index as it would have by the old one.
"""

from django.db import migrations, models


def start_from_the_records_stored(apps, schema_editor):
    JobRecord = apps.get_model("allocations", "JobRecord")
    ReconciliationCursor = apps.get_model("allocations", "ReconciliationCursor")
    for cursor in ReconciliationCursor.objects.all():
        records = JobRecord.objects.filter(system_id=cursor.system_id)
        records.filter(changed_seq__gt=cursor.reconciled_seq).update(revised=True)
        # Read backwards from the newest id: it stops at the system's newest record, however long its history.
        cursor.reconciled_id = records.order_by("-id").values_list("id", flat=True).first() or 0
        cursor.save(update_fields=["reconciled_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0016_ingest_batch_unread_index"),
        ("programmes", "0006_system_time_zone_is_a_known_zone"),
    ]

    operations = [
        migrations.AddField(
            model_name="jobrecord",
            name="revised",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="Changed in place since it was stored (a later report, an assignment): found by the change "
                "index.",
            ),
        ),
        migrations.AddField(
            model_name="reconciliationcursor",
            name="reconciled_id",
            field=models.BigIntegerField(default=0),
        ),
        # Going back needs nothing: the old index holds every record again.
        migrations.RunPython(start_from_the_records_stored, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="jobrecord", name="job_record_changes"),
        migrations.AddIndex(
            model_name="jobrecord",
            index=models.Index(
                condition=models.Q(("revised", True)), fields=["system", "changed_seq"], name="job_record_revisions"
            ),
        ),
    ]
