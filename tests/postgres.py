"""Marks for tests that need PostgreSQL: they skip, with the reason, when the suite runs on SQLite."""

import pytest
from django.db import connection

requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (row locks, triggers); set DATABASE_URL=postgres://... to run it",
)
