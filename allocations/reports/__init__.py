"""Usage reports: GPU-hours awarded and used, grouped as an admin or director asks, read from the ledger.

`selectors.py` aggregates in SQL (grouped queries over ledger entries and job charges) and reads job records for
the raw export; `exports.py` shapes the small results with pandas and writes CSV or XLSX, or streams every job
record into a CSV (COPY on PostgreSQL); `services.py` asks for, builds and expires exports; the pages are in
`views.py`, the API in `api.py`. Every figure is read "as of" a moment (entries recorded by then), so the same
export made again later gives the same numbers.
"""
