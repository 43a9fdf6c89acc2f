-- dead_letters: A record the pipeline could not process, with why.
-- Must match stores/bigquery.py TABLE_SPECS['dead_letters'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on event_time, clustered by step, reason; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.dead_letters (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  dead_letter_id STRING NOT NULL,
  step STRING NOT NULL,
  reason STRING NOT NULL,
  detail STRING NOT NULL,
  payload STRING NOT NULL,
  origin STRING NOT NULL,
  event_time TIMESTAMP OPTIONS(description="NULL when it could not be read"),
  position STRING NOT NULL OPTIONS(description="where in origin: line:<n>, row:<n>, message:<id>; empty when the record has none")
)
PARTITION BY event_time
CLUSTER BY step, reason
OPTIONS(description="A record the pipeline could not process, with why.");
