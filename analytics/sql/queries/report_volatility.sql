-- report_volatility: annualised 20- and 60-session rolling volatility of daily log returns of a
-- set of instruments over a window (report `volatility`).
--
-- Parameters: @symbols ARRAY<STRING> (instrument ids), @start DATE, @end DATE (inclusive; each
-- window reaches back 20 / 60 returns, before @start when needed).
-- Input: rolling_volatility (SQRT(252) * STDDEV_SAMP of the last N log returns; NULL until N).
SELECT instrument_id, symbol, currency, session_date, price, log_return, volatility_20,
       volatility_60
FROM miraikakaku.rolling_volatility
WHERE instrument_id IN UNNEST(@symbols)
  AND session_date BETWEEN @start AND @end
ORDER BY instrument_id, session_date
