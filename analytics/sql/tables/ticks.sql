-- ticks: One trade; price in currency, size in shares.
-- Must match stores/bigquery.py TABLE_SPECS['ticks'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on session_date, clustered by instrument_id, source; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.ticks (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  event_id STRING NOT NULL OPTIONS(description="{source}/{instrument_id}/{interval}/{start}/{sequence}"),
  instrument_id STRING NOT NULL OPTIONS(description="exchange-qualified id, e.g. XNAS:AAPL"),
  symbol STRING NOT NULL OPTIONS(description="ticker as the source spelled it"),
  source STRING NOT NULL OPTIONS(description="data source name"),
  sequence INT64 NOT NULL OPTIONS(description="per-source sequence number"),
  session_date DATE NOT NULL OPTIONS(description="exchange-local trading date"),
  event_time TIMESTAMP NOT NULL OPTIONS(description="trade time, UTC (millisecond precision)"),
  price FLOAT64 NOT NULL,
  size FLOAT64,
  currency STRING NOT NULL OPTIONS(description="ISO 4217"),
  flags ARRAY<STRING> OPTIONS(description="quality flags, e.g. suspicious"),
  schema_version INT64 NOT NULL
)
PARTITION BY session_date
CLUSTER BY instrument_id, source
OPTIONS(description="One trade; price in currency, size in shares.");
