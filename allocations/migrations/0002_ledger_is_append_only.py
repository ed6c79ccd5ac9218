"""On PostgreSQL, refuse UPDATE and DELETE on ledger entries and transactions: corrections are new rows.

SQLite (development, the quick test run) has no such trigger; the services never update or delete either way.
TRUNCATE, which the test runner uses to empty the database between tests, fires no row trigger.
"""

from django.db import migrations

TABLES = ("allocations_ledgerentry", "allocations_ledgertransaction")

CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION allocations_ledger_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the GPU-hour ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'Record a correcting transaction instead.';
END;
$$ LANGUAGE plpgsql;
"""


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_FUNCTION, params=None)
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION allocations_ledger_refuse_change();"
        )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
    schema_editor.execute("DROP FUNCTION IF EXISTS allocations_ledger_refuse_change();")


class Migration(migrations.Migration):
    dependencies = [("allocations", "0001_initial")]

    operations = [migrations.RunPython(create_triggers, drop_triggers, elidable=False)]
