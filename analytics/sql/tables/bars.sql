-- bars: One OHLCV bar (1d, 1h, 1m, 1s) per source; prices in currency.
-- Must match stores/bigquery.py TABLE_SPECS['bars'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on session_date, clustered by instrument_id, interval, source; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.bars (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  event_id STRING NOT NULL OPTIONS(description="{source}/{instrument_id}/{interval}/{start}/{sequence}"),
  instrument_id STRING NOT NULL OPTIONS(description="exchange-qualified id, e.g. XNAS:AAPL"),
  symbol STRING NOT NULL OPTIONS(description="ticker as the source spelled it"),
  source STRING NOT NULL OPTIONS(description="data source name"),
  `interval` STRING NOT NULL OPTIONS(description="1d, 1h, 1m or 1s"),
  session_date DATE NOT NULL OPTIONS(description="exchange-local trading date"),
  event_time TIMESTAMP NOT NULL OPTIONS(description="bar end (daily: session close), UTC"),
  open FLOAT64 NOT NULL,
  high FLOAT64 NOT NULL,
  low FLOAT64 NOT NULL,
  close FLOAT64 NOT NULL,
  volume FLOAT64 OPTIONS(description="shares traded; NULL when the source has none"),
  adj_close FLOAT64 OPTIONS(description="adjusted close; NULL when the source has none"),
  currency STRING NOT NULL OPTIONS(description="ISO 4217"),
  flags ARRAY<STRING> OPTIONS(description="quality flags at ingest"),
  schema_version INT64 NOT NULL,
  ingested_at TIMESTAMP OPTIONS(description="when this revision was written, UTC: the latest of an event_id wins")
)
PARTITION BY session_date
CLUSTER BY instrument_id, `interval`, source
OPTIONS(description="One OHLCV bar (1d, 1h, 1m, 1s) per source; prices in currency.");
