-- bq_dead_letters: A row BigQuery rejected, with the error.
-- Must match stores/bigquery.py TABLE_SPECS['bq_dead_letters'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on failed_at, clustered by table_name, instrument_id; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.bq_dead_letters (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  table_name STRING NOT NULL OPTIONS(description="the table the row was meant for"),
  destination STRING NOT NULL OPTIONS(description="project:dataset.table as Beam reported it"),
  row_insert_id STRING OPTIONS(description="the rejected row's insert_id"),
  instrument_id STRING,
  row_json STRING NOT NULL OPTIONS(description="the rejected row as JSON"),
  error_reason STRING NOT NULL OPTIONS(description="first error's reason, e.g. invalid"),
  error_message STRING NOT NULL,
  errors_json STRING NOT NULL OPTIONS(description="every error as JSON"),
  failed_at TIMESTAMP NOT NULL OPTIONS(description="when the pipeline received the rejection")
)
PARTITION BY failed_at
CLUSTER BY table_name, instrument_id
OPTIONS(description="A row BigQuery rejected, with the error.");
