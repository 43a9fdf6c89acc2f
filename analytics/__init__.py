"""Analytics: the embedded DuckDB warehouse and the BigQuery SQL that runs on it and on BigQuery.

``analytics.warehouse`` transpiles the BigQuery-dialect ``.sql`` files under ``analytics/sql``
(tables, views) to DuckDB with sqlglot and runs them on a DuckDB database file (embedded mode);
in Google Cloud mode the same files run on BigQuery unchanged.

Run the tests: ``.venv/bin/python -m pytest -q tests/unit/test_analytics_warehouse.py
tests/unit/test_analytics_views.py``.
"""

from analytics.warehouse import Warehouse, transpile

__all__ = ["Warehouse", "transpile"]
