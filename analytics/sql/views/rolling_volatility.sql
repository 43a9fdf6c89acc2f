-- rolling_volatility: annualised rolling volatility of daily log returns, per instrument and
-- session.
--
-- Grain: one row per (instrument_id, session_date) with a daily log return (daily_returns:
-- feature price = adjusted close when the source has one, one source per session).
-- Formula (close-to-close historical volatility; J. C. Hull, "Options, Futures, and Other
-- Derivatives", chapter "The Black-Scholes-Merton model", "Estimating volatility from
-- historical data", with log returns and 252 trading days a year):
--   r_t = LN(P_t / P_{t-1})
--   volatility_N(t) = SQRT(252) * STDDEV_SAMP(r_{t-N+1}, ..., r_t)
--                   = SQRT(252) * SQRT( SUM_k (r_k - mean(r))^2 / (N - 1) )
-- over the instrument's last N returns (N = 20 and 60 sessions, rows not calendar days),
-- 252 trading sessions a year. NULL until N returns exist (pandas' rolling(N).std() does the
-- same). n_20 / n_60 say how many returns the window holds.
CREATE OR REPLACE VIEW miraikakaku.rolling_volatility AS
SELECT instrument_id, symbol, exchange, source, session_date, currency, price, log_return,
       COUNT(log_return) OVER w20 AS n_20,
       IF(COUNT(log_return) OVER w20 = 20,
          STDDEV_SAMP(log_return) OVER w20 * SQRT(252), NULL) AS volatility_20,
       COUNT(log_return) OVER w60 AS n_60,
       IF(COUNT(log_return) OVER w60 = 60,
          STDDEV_SAMP(log_return) OVER w60 * SQRT(252), NULL) AS volatility_60
FROM miraikakaku.daily_returns
WHERE log_return IS NOT NULL
WINDOW w20 AS (PARTITION BY instrument_id ORDER BY session_date
               ROWS BETWEEN 19 PRECEDING AND CURRENT ROW),
       w60 AS (PARTITION BY instrument_id ORDER BY session_date
               ROWS BETWEEN 59 PRECEDING AND CURRENT ROW)
