-- model_performance: Prediction errors of one model version on one instrument for one realized session.
-- Must match stores/bigquery.py TABLE_SPECS['model_performance'] (tests/unit/test_analytics_warehouse.py).
-- Partitioned by day on target_date, clustered by instrument_id, model_name, model_version; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.model_performance (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  model_name STRING NOT NULL OPTIONS(description="model name, e.g. lstm_daily"),
  model_version STRING NOT NULL OPTIONS(description="model version (integer directory name)"),
  instrument_id STRING NOT NULL OPTIONS(description="exchange-qualified id, e.g. XNAS:AAPL"),
  target_date DATE NOT NULL OPTIONS(description="the realized session (the day of the row)"),
  currency STRING NOT NULL OPTIONS(description="ISO 4217 currency of the price errors"),
  n INT64 NOT NULL OPTIONS(description="outcomes in the row"),
  n_direction INT64 NOT NULL OPTIONS(description="outcomes whose realized return is not 0"),
  direction_hits INT64 NOT NULL OPTIONS(description="outcomes whose forecast sign was right"),
  sum_error FLOAT64 NOT NULL OPTIONS(description="sum of predicted - realized price"),
  sum_abs_error FLOAT64 NOT NULL OPTIONS(description="sum of |predicted - realized| price"),
  sum_squared_error FLOAT64 NOT NULL OPTIONS(description="sum of squared price errors"),
  sum_abs_pct_error FLOAT64 NOT NULL OPTIONS(description="sum of |error| / realized price (fractions)"),
  mae FLOAT64 NOT NULL OPTIONS(description="mean absolute error, price units"),
  rmse FLOAT64 NOT NULL OPTIONS(description="root mean squared error, price units"),
  mape FLOAT64 NOT NULL OPTIONS(description="mean absolute percentage error, percent"),
  directional_accuracy FLOAT64 OPTIONS(description="direction_hits / n_direction; NULL when n_direction is 0")
)
PARTITION BY target_date
CLUSTER BY instrument_id, model_name, model_version
OPTIONS(description="Prediction errors of one model version on one instrument for one realized session.");
