-- market_trend: per instrument and session, simple moving averages of the adjusted price
-- (daily_performance.price) over the last 20, 50 and 200 sessions of the instrument (this one
-- included), and whether the price is above them.
--
-- * ma_N: mean price of the last N sessions; NULL until the instrument has N sessions in the
--   table (never an average over fewer sessions);
-- * above_ma_N: price > ma_N (strictly); NULL when ma_N is NULL;
-- * daily_return: as in daily_performance (for advancers/decliners, market_trend_by_exchange).
-- Prices in the instrument's quote currency.
CREATE OR REPLACE VIEW miraikakaku.market_trend AS
WITH averaged AS (
  SELECT
    instrument_id,
    symbol,
    mic,
    currency,
    source,
    session_date,
    price,
    daily_return,
    IF(COUNT(price) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) = 20,
       AVG(price) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN 19 PRECEDING AND CURRENT ROW),
       NULL) AS ma_20,
    IF(COUNT(price) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN 49 PRECEDING AND CURRENT ROW) = 50,
       AVG(price) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN 49 PRECEDING AND CURRENT ROW),
       NULL) AS ma_50,
    IF(COUNT(price) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN 199 PRECEDING AND CURRENT ROW) = 200,
       AVG(price) OVER (
         PARTITION BY instrument_id ORDER BY session_date
         ROWS BETWEEN 199 PRECEDING AND CURRENT ROW),
       NULL) AS ma_200
  FROM miraikakaku.daily_performance
)
SELECT
  *,
  price > ma_20 AS above_ma_20,
  price > ma_50 AS above_ma_50,
  price > ma_200 AS above_ma_200
FROM averaged;
