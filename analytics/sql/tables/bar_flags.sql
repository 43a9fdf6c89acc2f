-- bar_flags: A quality flag the feature step put on a stored bar.
-- Must match stores/bigquery.py TABLE_SPECS['bar_flags'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on bar_date, clustered by instrument_id, flag; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.bar_flags (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  row_key STRING NOT NULL OPTIONS(description="the bar's serving-store row key"),
  instrument_id STRING NOT NULL,
  `interval` STRING NOT NULL,
  bar_date DATE NOT NULL OPTIONS(description="date in the bar's key (daily bars: the session date)"),
  source STRING NOT NULL,
  flag STRING NOT NULL,
  detail STRING
)
PARTITION BY bar_date
CLUSTER BY instrument_id, flag
OPTIONS(description="A quality flag the feature step put on a stored bar.");
