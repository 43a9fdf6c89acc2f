-- predictions: A next-session forecast made at the close of as_of_date.
-- Must match stores/bigquery.py TABLE_SPECS['predictions'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on as_of_date, clustered by instrument_id, model_name; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.predictions (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  instrument_id STRING NOT NULL,
  source STRING NOT NULL OPTIONS(description="the source whose bars fed the features"),
  as_of_date DATE NOT NULL,
  as_of_time TIMESTAMP NOT NULL,
  target_date DATE NOT NULL,
  base_price FLOAT64 NOT NULL,
  predicted_log_return FLOAT64 NOT NULL,
  predicted_price FLOAT64 NOT NULL,
  model_name STRING NOT NULL,
  model_version STRING NOT NULL OPTIONS(description="version of the model that answered: the integer directory name locally, vertex-<deployedModelId> from a Vertex AI endpoint"),
  role STRING OPTIONS(description="champion (the prediction) or challenger; NULL in rows written before roles existed means champion")
)
PARTITION BY as_of_date
CLUSTER BY instrument_id, model_name
OPTIONS(description="A next-session forecast made at the close of as_of_date.");
