-- features: the feature vector of one instrument's session, from the source that fed the features.
-- Must match analytics/sink.py FEATURES_SPEC (tests/unit/test_analytics_sink.py); one FLOAT64
-- column per transforms/features.py FEATURE_NAMES, float32-rounded as the LSTM receives them
-- (the last row of each ComputeFeatures window; see analytics/sink.py).
-- Partitioned by day on session_date, clustered by instrument_id, source; de-duplicate on insert_id.
CREATE TABLE IF NOT EXISTS miraikakaku.features (
  insert_id STRING NOT NULL OPTIONS(description="deterministic row id: de-duplicate on it"),
  instrument_id STRING NOT NULL OPTIONS(description="exchange-qualified id, e.g. XNAS:AAPL"),
  source STRING NOT NULL OPTIONS(description="the source whose bars fed the features"),
  session_date DATE NOT NULL OPTIONS(description="exchange-local trading date"),
  event_time TIMESTAMP NOT NULL OPTIONS(description="the session's close, UTC"),
  log_return_1 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  log_return_5 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  sma_gap_10 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  sma_gap_20 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  volatility_20 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  rsi_14 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  range_ratio FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)"),
  volume_z_20 FLOAT64 NOT NULL OPTIONS(description="transforms/features.py (float32 as the model sees it)")
)
PARTITION BY session_date
CLUSTER BY instrument_id, source
OPTIONS(description="The feature vector of one instrument's session, from the source that fed the features.");
