"""A failed batch made `received` again records when, so that whether its reading was lost is timed from then."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0018_reconciliation_failure"),
    ]

    operations = [
        migrations.AddField(
            model_name="ingestbatch",
            name="reopened_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
