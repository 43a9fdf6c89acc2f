-- alerts: A market alert fired by a rule.
-- Must match stores/bigquery.py TABLE_SPECS['alerts'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on session_date, clustered by instrument_id, rule_id; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.alerts (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  alert_id STRING NOT NULL OPTIONS(description="{rule_id}/{instrument_id}/{yyyymmdd}"),
  rule_id STRING NOT NULL,
  kind STRING NOT NULL,
  instrument_id STRING NOT NULL,
  event_time TIMESTAMP NOT NULL,
  session_date DATE NOT NULL,
  value FLOAT64 NOT NULL,
  threshold FLOAT64 NOT NULL,
  message STRING NOT NULL
)
PARTITION BY session_date
CLUSTER BY instrument_id, rule_id
OPTIONS(description="A market alert fired by a rule.");
