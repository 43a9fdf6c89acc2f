-- model_performance_daily: forecast errors per model version, instrument and realized session.
--
-- Grain: one row per (model_name, model_version, instrument_id, target_date), from the
-- model_performance table that `miraikakaku track` (miraikakaku/tracking.py) fills; the row
-- keeps sums, the metrics are derived here from them (price errors in the row's currency):
--   mae  = sum_abs_error / n                    rmse = SQRT(sum_squared_error / n)
--   mape = 100 * sum_abs_pct_error / n (percent; Hyndman & Koehler, IJF 2006)
--   mean_error = sum_error / n (bias: positive = forecasts too high)
--   directional_accuracy = direction_hits / n_direction (NULL when n_direction = 0)
-- where error = predicted_price - realized_price. A rewritten row (the tracking job rerun)
-- appends a row with the same insert_id; one per insert_id is kept (the one with the most
-- outcomes: a rerun only adds realized predictions).
CREATE OR REPLACE VIEW miraikakaku.model_performance_daily AS
WITH perf AS (
  SELECT *
  FROM miraikakaku.model_performance
  WHERE n > 0
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id
                             ORDER BY n DESC, sum_squared_error DESC) = 1
)
SELECT model_name, model_version, instrument_id,
       SPLIT(instrument_id, ':')[OFFSET(0)] AS exchange,
       target_date, currency,
       n, n_direction, direction_hits,
       sum_error, sum_abs_error, sum_squared_error, sum_abs_pct_error,
       sum_error / n AS mean_error,
       sum_abs_error / n AS mae,
       SQRT(sum_squared_error / n) AS rmse,
       100 * sum_abs_pct_error / n AS mape,
       IF(n_direction > 0, direction_hits / n_direction, NULL) AS directional_accuracy
FROM perf
