-- report_performance: daily performance of a set of instruments over a window (report
-- `performance`, analytics/reports.py).
--
-- Parameters: @symbols ARRAY<STRING> (instrument ids, e.g. XNAS:AAPL), @start DATE, @end DATE
-- (inclusive).
-- Input: daily_performance (adjusted price of the instrument's best source, quote currency).
-- Rebased to the window: for the sessions in [@start, @end],
--   cumulative_return = price / price on the window's first session - 1 (a fraction);
--   drawdown = price / highest price in the window so far - 1 (<= 0);
--   max_drawdown = the lowest drawdown in the window so far (<= 0).
-- daily_return is the view's (price / previous stored session's price - 1; the first session
-- of the window compares with the session before it).
WITH p AS (
  SELECT instrument_id, symbol, currency, session_date, price, daily_return
  FROM miraikakaku.daily_performance
  WHERE instrument_id IN UNNEST(@symbols)
    AND session_date BETWEEN @start AND @end
),
w AS (
  SELECT *,
         SAFE_DIVIDE(price, FIRST_VALUE(price) OVER (
           PARTITION BY instrument_id ORDER BY session_date
           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) - 1 AS cumulative_return,
         SAFE_DIVIDE(price, MAX(price) OVER (
           PARTITION BY instrument_id ORDER BY session_date
           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) - 1 AS drawdown
  FROM p
)
SELECT instrument_id, symbol, currency, session_date, price, daily_return, cumulative_return,
       drawdown,
       MIN(drawdown) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS max_drawdown
FROM w
ORDER BY instrument_id, session_date
