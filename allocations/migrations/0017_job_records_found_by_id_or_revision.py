"""Reconciliation finds new job records by the id ranges their writes note (JobRecordIdRange) and changed ones by
a change index that holds only them (JobRecord.revised).

The records not yet reconciled when this runs are in no noted range: they are marked revised, so that the next
run finds them by the new index as it would have by the old one. Stop the workers before migrating: an ingest of
the code before this one changes records in place without marking them.
"""

from django.db import migrations, models
from django.db.models import Q


def mark_the_records_not_yet_reconciled(apps, schema_editor):
    JobRecord = apps.get_model("allocations", "JobRecord")
    ReconciliationCursor = apps.get_model("allocations", "ReconciliationCursor")
    reconciled = dict(ReconciliationCursor.objects.values_list("system_id", "reconciled_seq"))
    systems = JobRecord.objects.order_by().values_list("system_id", flat=True).distinct()
    for system_id in list(systems):
        JobRecord.objects.filter(system_id=system_id, changed_seq__gt=reconciled.get(system_id, 0)).update(revised=True)


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
        migrations.CreateModel(
            name="JobRecordIdRange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("seq", models.BigIntegerField()),
                ("after_id", models.BigIntegerField()),
                ("through_id", models.BigIntegerField()),
                (
                    "system",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="programmes.system",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("system", "seq"), name="job_record_ids_one_per_change")
                ],
            },
        ),
        # Going back needs nothing: the old index holds every record again.
        migrations.RunPython(mark_the_records_not_yet_reconciled, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="jobrecord", name="job_record_changes"),
        migrations.AddIndex(
            model_name="jobrecord",
            index=models.Index(
                condition=Q(revised=True), fields=["system", "changed_seq"], name="job_record_revisions"
            ),
        ),
    ]
