"""A failed batch made `received` again records when, so that whether its reading was lost is timed from then."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("allocations", "0017_job_records_found_by_id_or_revision"),
    ]

    operations = [
        migrations.AddField(
            model_name="ingestbatch",
            name="reopened_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
