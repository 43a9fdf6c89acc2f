-- daily_bars: one row per instrument and session, the deduplicated daily bar of the instrument's
-- best source.
--
-- * De-duplication and corrections: streaming inserts and pipeline replays may repeat a row, and
--   a source may correct a bar (same event_id, other values: another insert_id, stores/bigquery.py).
--   One row per event_id: the latest revision by ingested_at wins (the correction policy, README
--   "Block or flag"); rows written before ingested_at existed (NULL) lose to any that has it.
-- * Best source, per instrument (not per day): the source ranked first in the platform's source
--   priority (miraikakaku.settings.Settings.source_priority: chart0, sp500_5yr, yfinance, mlbot,
--   user; other sources after these, by name) among the sources that delivered daily bars of the
--   instrument. One source for the whole series, so returns never jump between price bases
--   (chart0 is split-adjusted, mlbot's adj_close is also dividend-adjusted).
-- * price: the adjusted close where the source has one (adj_close), else close (sources without
--   an adjusted close deliver split-adjusted OHLC): PriceEvent.feature_price. Rows whose price is
--   NaN or infinite are left out. Prices in the instrument's quote currency.
-- * mic: the exchange from the instruments reference table; NULL for an index; the id's prefix
--   (XNAS of XNAS:AAPL) for an instrument the reference table does not know.
CREATE OR REPLACE VIEW miraikakaku.daily_bars AS
WITH deduplicated AS (
  SELECT *
  FROM miraikakaku.bars
  WHERE `interval` = '1d'
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY event_id ORDER BY ingested_at DESC NULLS LAST, insert_id) = 1
),
best_source AS (
  SELECT instrument_id, source
  FROM (SELECT DISTINCT instrument_id, source FROM deduplicated)
  WHERE TRUE  -- BigQuery has required WHERE, GROUP BY or HAVING next to QUALIFY
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY instrument_id
    ORDER BY
      CASE source
        WHEN 'chart0' THEN 1
        WHEN 'sp500_5yr' THEN 2
        WHEN 'yfinance' THEN 3
        WHEN 'mlbot' THEN 4
        WHEN 'user' THEN 5
        ELSE 6
      END,
      source) = 1
)
SELECT
  b.instrument_id,
  b.symbol,
  IF(i.instrument_id IS NULL, SPLIT(b.instrument_id, ':')[OFFSET(0)], i.mic) AS mic,
  b.currency,
  b.source,
  b.session_date,
  b.event_time,
  b.open,
  b.high,
  b.low,
  b.close,
  b.adj_close,
  b.volume,
  COALESCE(b.adj_close, b.close) AS price,
  b.flags
FROM deduplicated AS b
JOIN best_source AS s ON s.instrument_id = b.instrument_id AND s.source = b.source
LEFT JOIN miraikakaku.instruments AS i ON i.instrument_id = b.instrument_id
WHERE NOT IS_NAN(COALESCE(b.adj_close, b.close)) AND NOT IS_INF(COALESCE(b.adj_close, b.close));
