-- model_performance_by_version: model_performance_daily rolled up per model version.
--
-- Grain: one row per (model_name, model_version) over every instrument and realized session.
-- Sums add, so the metrics are exact over the rolled-up outcomes (not means of daily means):
--   mae = SUM(sum_abs_error) / SUM(n), rmse = SQRT(SUM(sum_squared_error) / SUM(n)),
--   mape = 100 * SUM(sum_abs_pct_error) / SUM(n) (percent),
--   directional_accuracy = SUM(direction_hits) / SUM(n_direction).
-- Price-unit metrics (mae, rmse, mean_error) and currency are NULL when the version's rows span
-- several currencies (adding yen to dollars means nothing); mape and directional accuracy are
-- unit-free. Same rules as miraikakaku.tracking.summarize_performance(by_instrument=False).
CREATE OR REPLACE VIEW miraikakaku.model_performance_by_version AS
SELECT model_name, model_version,
       IF(COUNT(DISTINCT currency) = 1, MIN(currency), NULL) AS currency,
       COUNT(DISTINCT instrument_id) AS instruments,
       COUNT(DISTINCT target_date) AS sessions,
       MIN(target_date) AS first_date,
       MAX(target_date) AS last_date,
       SUM(n) AS n,
       SUM(n_direction) AS n_direction,
       SUM(direction_hits) AS direction_hits,
       IF(COUNT(DISTINCT currency) = 1, SUM(sum_error) / SUM(n), NULL) AS mean_error,
       IF(COUNT(DISTINCT currency) = 1, SUM(sum_abs_error) / SUM(n), NULL) AS mae,
       IF(COUNT(DISTINCT currency) = 1, SQRT(SUM(sum_squared_error) / SUM(n)), NULL) AS rmse,
       100 * SUM(sum_abs_pct_error) / SUM(n) AS mape,
       IF(SUM(n_direction) > 0, SUM(direction_hits) / SUM(n_direction), NULL)
         AS directional_accuracy
FROM miraikakaku.model_performance_daily
GROUP BY model_name, model_version
