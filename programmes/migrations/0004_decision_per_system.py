"""A decision keeps its outcome and rationale; what it awarded on each system lives in its allocations."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("programmes", "0003_calls_and_proposals")]

    operations = [
        migrations.RemoveField(model_name="decision", name="pool"),
        migrations.RemoveField(model_name="decision", name="awarded_seconds"),
        migrations.RemoveField(model_name="decision", name="start_date"),
        migrations.RemoveField(model_name="decision", name="end_date"),
    ]
