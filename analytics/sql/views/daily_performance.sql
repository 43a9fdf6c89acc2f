-- daily_performance: per instrument and session, returns and drawdowns of the adjusted price
-- (daily_bars.price: adjusted close where present, else close; one source per instrument).
--
-- * session_number: 1 for the instrument's first session in the table, then 2, 3, ...
-- * daily_return = price / previous session's price - 1 (a fraction; NULL on the first session;
--   a gap in the data makes it span the gap);
-- * cumulative_return = price / price of the first session in the table - 1;
-- * running_max_price = the highest price so far (this session included);
-- * drawdown = price / running_max_price - 1 (<= 0; 0 at a new high);
-- * max_drawdown = the lowest drawdown so far (the worst peak-to-trough fall up to this session,
--   <= 0).
-- Divisions by a zero price give NULL (SAFE_DIVIDE).
CREATE OR REPLACE VIEW miraikakaku.daily_performance AS
WITH priced AS (
  SELECT
    instrument_id,
    symbol,
    mic,
    currency,
    source,
    session_date,
    price,
    ROW_NUMBER() OVER (PARTITION BY instrument_id ORDER BY session_date) AS session_number,
    LAG(price) OVER (PARTITION BY instrument_id ORDER BY session_date) AS previous_price,
    FIRST_VALUE(price) OVER (
      PARTITION BY instrument_id ORDER BY session_date
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS first_price,
    MAX(price) OVER (
      PARTITION BY instrument_id ORDER BY session_date
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running_max_price
  FROM miraikakaku.daily_bars
),
returns AS (
  SELECT
    *,
    SAFE_DIVIDE(price, previous_price) - 1 AS daily_return,
    SAFE_DIVIDE(price, first_price) - 1 AS cumulative_return,
    SAFE_DIVIDE(price, running_max_price) - 1 AS drawdown
  FROM priced
)
SELECT
  instrument_id,
  symbol,
  mic,
  currency,
  source,
  session_date,
  session_number,
  price,
  previous_price,
  daily_return,
  cumulative_return,
  running_max_price,
  drawdown,
  MIN(drawdown) OVER (
    PARTITION BY instrument_id ORDER BY session_date
    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS max_drawdown
FROM returns;
