"""The funded call of the proposal tests, for the award tests here."""

from tests.programmes.conftest import assessor, call, director, pool  # noqa: F401
