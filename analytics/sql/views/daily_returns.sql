-- daily_returns: one daily log return per instrument and session (the statistics' input).
--
-- Grain: one row per (instrument_id, session_date) that has a daily bar.
-- Price: the feature price, COALESCE(adj_close, close) (adjusted close when the source has one,
-- as PriceEvent.feature_price and miraikakaku.tracking.bar_feature_price), quote currency.
-- Bars whose price is NaN or infinite are left out.
-- Return: log_return = LN(price_t / price_{t-1}), where t-1 is the previous stored daily bar of
-- the SAME instrument and SAME source (a return never spans two sources, whose adjustments
-- differ: chart0 is split-adjusted, mlbot's adj_close also dividend-adjusted); over a hole in the
-- data it spans the hole (prev_session_date says so). The first bar of each source has none.
-- Source choice, per session: all sources' returns are computed, then each session keeps the
-- best-ranked source that has a return that day (else the best-ranked bar, with a NULL
-- return). The rank mirrors the default MIRAIKAKAKU_SOURCE_PRIORITY (chart0, sp500_5yr,
-- yfinance, mlbot, user; other sources after these, by name).
-- Why not daily_bars (one source per instrument for its whole series): rolling windows and
-- betas need long histories, and e.g. 7203.T's best source, chart0, starts in 2016 while mlbot
-- goes back to 1983; choosing per session keeps the whole history, and computing each return
-- within one source keeps the price bases apart. For an instrument with one source both views
-- hold the same prices.
-- Duplicates: rows are de-duplicated on insert_id (BigQuery's at-least-once inserts, replays).
CREATE OR REPLACE VIEW miraikakaku.daily_returns AS
WITH bars_1d AS (
  SELECT instrument_id, symbol, source, session_date, currency,
         COALESCE(adj_close, close) AS price
  FROM miraikakaku.bars
  WHERE `interval` = '1d'
    AND NOT IS_NAN(COALESCE(adj_close, close)) AND NOT IS_INF(COALESCE(adj_close, close))
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY event_time, event_id) = 1
),
per_source AS (
  SELECT instrument_id, symbol, source, session_date, currency, price,
         LAG(session_date) OVER w AS prev_session_date,
         LN(price / LAG(price) OVER w) AS log_return
  FROM bars_1d
  WINDOW w AS (PARTITION BY instrument_id, source ORDER BY session_date)
)
SELECT instrument_id, symbol, SPLIT(instrument_id, ':')[OFFSET(0)] AS exchange, source,
       session_date, prev_session_date, currency, price, log_return
FROM per_source
WHERE price > 0
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY instrument_id, session_date
  ORDER BY IF(log_return IS NULL, 1, 0),
           CASE source WHEN 'chart0' THEN 0 WHEN 'sp500_5yr' THEN 1 WHEN 'yfinance' THEN 2
                       WHEN 'mlbot' THEN 3 WHEN 'user' THEN 4 ELSE 5 END,
           source) = 1
