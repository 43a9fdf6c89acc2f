-- report_trend: market breadth per exchange and session over a window (report `trend`).
--
-- Parameters: @start DATE, @end DATE (inclusive).
-- Input: market_trend_by_exchange (instruments of each exchange in the warehouse; indexes left
-- out): share of instruments above their 50-session moving average, advancers, decliners.
SELECT mic, session_date, n_instruments, n_with_ma_50, n_above_ma_50, share_above_ma_50,
       advancers, decliners, unchanged, net_advancers
FROM miraikakaku.market_trend_by_exchange
WHERE session_date BETWEEN @start AND @end
ORDER BY mic, session_date
