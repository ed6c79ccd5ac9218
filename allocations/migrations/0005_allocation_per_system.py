"""One allocation per awarded system: Allocation gains `system` (its pool's), its scheduler account is unique
per system rather than everywhere, and a proposal may hold one allocation on each system it was awarded."""

import django.db.models.deletion
from django.db import migrations, models


def copy_pool_system(apps, schema_editor):
    Allocation = apps.get_model("allocations", "Allocation")
    FundPool = apps.get_model("programmes", "FundPool")
    for pool_id, system_id in FundPool.objects.values_list("pk", "system_id"):
        Allocation.objects.filter(pool_id=pool_id).update(system_id=system_id)


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0004_usage"),
        ("programmes", "0003_calls_and_proposals"),
    ]

    operations = [
        migrations.AddField(
            model_name="allocation",
            name="system",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="allocations",
                to="programmes.system",
            ),
        ),
        migrations.RunPython(copy_pool_system, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="allocation",
            name="system",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="allocations",
                to="programmes.system",
            ),
        ),
        migrations.AlterField(
            model_name="allocation",
            name="scheduler_account",
            field=models.CharField(
                help_text="The Slurm account name, e.g. airr-00042: joins award, scheduler and usage on a system.",
                max_length=64,
            ),
        ),
        migrations.AlterField(
            model_name="allocation",
            name="proposal",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="allocations",
                to="programmes.proposal",
            ),
        ),
        migrations.AddConstraint(
            model_name="allocation",
            constraint=models.UniqueConstraint(
                fields=("system", "scheduler_account"), name="allocation_account_unique_per_system"
            ),
        ),
        migrations.AddConstraint(
            model_name="allocation",
            constraint=models.UniqueConstraint(
                fields=("proposal", "system"), name="allocation_one_per_proposal_system"
            ),
        ),
    ]
