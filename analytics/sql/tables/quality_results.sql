-- quality_results: One data-quality rule's outcome on one instrument's events in one event-time window.
-- Must match stores/bigquery.py TABLE_SPECS['quality_results'] (tests/unit/test_analytics_warehouse.py).
-- Written by quality/stream.py (ValidateWithSuite, `miraikakaku run --validation suite`).
-- Partitioned by day on window_start, clustered by instrument_id, rule; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.quality_results (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  window_start TIMESTAMP NOT NULL OPTIONS(description="quality window start, UTC (inclusive)"),
  window_end TIMESTAMP NOT NULL OPTIONS(description="quality window end, UTC (exclusive)"),
  instrument_id STRING NOT NULL OPTIONS(description="exchange-qualified id, e.g. XNAS:AAPL"),
  suite STRING NOT NULL OPTIONS(description="expectation suite, e.g. price_events (quality/suites.py)"),
  rule STRING NOT NULL OPTIONS(description="rule name: the dead-letter reason or flag it gives"),
  severity STRING NOT NULL OPTIONS(description="block (dead letter) or flag (stored with the flag)"),
  evaluated INT64 NOT NULL OPTIONS(description="rows of the instrument in the window the rule evaluated"),
  failed INT64 NOT NULL OPTIONS(description="rows among them that failed the rule"),
  run_id STRING NOT NULL OPTIONS(description="pipeline run: Dataflow job name or local-<UTC start>"),
  validated_at TIMESTAMP NOT NULL OPTIONS(description="when the row was made (processing time, UTC)"),
  pane_index INT64 NOT NULL OPTIONS(description="Beam pane of the window: 0 on time, > 0 late rows only")
)
PARTITION BY window_start
CLUSTER BY instrument_id, rule
OPTIONS(description="One data-quality rule's outcome on one instrument's events in one event-time window.");
