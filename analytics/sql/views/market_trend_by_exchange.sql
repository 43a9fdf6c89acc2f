-- market_trend_by_exchange: per exchange (MIC) and session date, market breadth over the
-- instruments of that exchange in the table (indexes, whose mic is NULL, are left out).
--
-- * n_instruments: instruments with a bar that day;
-- * n_with_ma_50: of these, instruments with a 50-session average (>= 50 sessions so far);
-- * n_above_ma_50, share_above_ma_50 = n_above_ma_50 / n_with_ma_50 (a fraction; NULL when no
--   instrument has a 50-session average yet);
-- * advancers / decliners / unchanged: instruments whose daily return (adjusted price vs their
--   previous session) is > 0 / < 0 / = 0; an instrument's first session has no return and counts
--   in none; net_advancers = advancers - decliners.
-- Counts are CAST to INT64: DuckDB's COUNT_IF is a HUGEINT (BigQuery's COUNTIF is INT64).
CREATE OR REPLACE VIEW miraikakaku.market_trend_by_exchange AS
SELECT
  mic,
  session_date,
  COUNT(*) AS n_instruments,
  CAST(COUNTIF(ma_50 IS NOT NULL) AS INT64) AS n_with_ma_50,
  CAST(COUNTIF(above_ma_50) AS INT64) AS n_above_ma_50,
  SAFE_DIVIDE(COUNTIF(above_ma_50), COUNTIF(ma_50 IS NOT NULL)) AS share_above_ma_50,
  CAST(COUNTIF(daily_return > 0) AS INT64) AS advancers,
  CAST(COUNTIF(daily_return < 0) AS INT64) AS decliners,
  CAST(COUNTIF(daily_return = 0) AS INT64) AS unchanged,
  CAST(COUNTIF(daily_return > 0) - COUNTIF(daily_return < 0) AS INT64) AS net_advancers
FROM miraikakaku.market_trend
WHERE mic IS NOT NULL
GROUP BY mic, session_date;
