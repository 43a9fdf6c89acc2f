-- report_model_performance: forecast errors per model version and realized session, over all
-- instruments or a set of them (report `model_performance`).
--
-- Parameters: @symbols ARRAY<STRING> (instrument ids; empty: every instrument), @start DATE,
-- @end DATE (inclusive, on target_date: the session the forecast was for).
-- Input: model_performance_daily (sums per model version, instrument and day). Sums add, so:
--   mape = 100 * SUM(sum_abs_pct_error) / SUM(n) (percent),
--   directional_accuracy = SUM(direction_hits) / SUM(n_direction) (NULL without directions),
--   rmse_log = NULL here: price errors of different currencies do not add (see
--   model_performance_by_version for single-currency versions).
SELECT model_name, model_version, target_date,
       COUNT(DISTINCT instrument_id) AS instruments,
       CAST(SUM(n) AS INT64) AS n,
       100 * SUM(sum_abs_pct_error) / SUM(n) AS mape,
       SAFE_DIVIDE(SUM(direction_hits), SUM(n_direction)) AS directional_accuracy
FROM miraikakaku.model_performance_daily
WHERE (ARRAY_LENGTH(@symbols) = 0 OR instrument_id IN UNNEST(@symbols))
  AND target_date BETWEEN @start AND @end
GROUP BY model_name, model_version, target_date
ORDER BY model_name, model_version, target_date
