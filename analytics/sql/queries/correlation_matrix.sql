-- correlation_matrix: pairwise Pearson correlation of daily log returns of a set of instruments.
--
-- Parameters: @symbols ARRAY<STRING> (tickers such as AAPL, 7203.T, or instrument ids such as
-- XNAS:AAPL), @start DATE, @end DATE (inclusive; sessions whose return falls in the window,
-- the first return of the window is taken from the bar before @start).
-- Returns (long format): one row per ordered pair (a, b), the diagonal included, with
--   corr = CORR(r_a, r_b) (Pearson: COVAR_SAMP(r_a, r_b) / (STDDEV_SAMP(r_a) * STDDEV_SAMP(r_b)))
--   n    = the number of sessions both have a return on (common dates only, pairwise as in
--          pandas' DataFrame.corr()); corr is NULL below 2 common sessions or with no variance.
-- Input: daily_returns (log returns of the feature price, one source per session).
WITH r AS (
  SELECT instrument_id, symbol, session_date, log_return
  FROM miraikakaku.daily_returns
  WHERE (symbol IN UNNEST(@symbols) OR instrument_id IN UNNEST(@symbols))
    AND session_date BETWEEN @start AND @end
    AND log_return IS NOT NULL
)
SELECT x.instrument_id AS a, y.instrument_id AS b,
       MIN(x.symbol) AS a_symbol, MIN(y.symbol) AS b_symbol,
       CORR(x.log_return, y.log_return) AS corr,
       COUNT(*) AS n
FROM r AS x
JOIN r AS y ON x.session_date = y.session_date
GROUP BY a, b
ORDER BY a, b
