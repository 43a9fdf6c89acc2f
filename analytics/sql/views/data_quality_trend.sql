-- data_quality_trend: bars stored, flagged bars by flag and dead letters by reason, per day.
--
-- Long format, one row per (day, level, exchange, instrument_id, interval, metric, name):
--   level    'instrument' (one instrument), 'exchange' (its instruments summed; instrument_id
--            NULL) or 'all' (every exchange; exchange and instrument_id NULL);
--   metric   'bars_stored'  count = bars stored (name NULL);
--            'flagged_bars' count = bars carrying at least one flag (name NULL);
--            'flag'         count = bars carrying flag `name` (a bar with two flags counts once
--                           under each, once in flagged_bars);
--            'dead_letter'  count = dead letters of reason `name` (level 'all' only: a dead
--                           letter has no trusted instrument; interval NULL);
--   bars     the bars stored in the same (day, level, exchange, instrument_id, interval);
--   share    count / bars (the share of stored bars flagged), NULL for dead letters.
-- Day: a bar's session_date (exchange-local trading date); a dead letter's DATE(event_time)
-- in UTC, NULL when the record's time could not be read (e.g. unparseable lines).
-- A bar's flags: its own ingest flags (bars.flags: ohlc_inconsistent, zero_volume,
-- not_a_session, calendar_estimated, ...) together with the flags the feature step put on it
-- (bar_flags: gap, large_move, source_switch, history_reset, ...; daily bars, joined on
-- instrument, source and session date), each flag counted once per bar.
-- Bars (per source: each source's bar is one stored bar) are one row per event_id, its latest
-- revision by ingested_at (as in daily_bars: a corrected bar counts once, with its own flags);
-- bar flags and dead letters are de-duplicated on insert_id.
CREATE OR REPLACE VIEW miraikakaku.data_quality_trend AS
WITH b AS (
  SELECT insert_id, event_id, instrument_id, SPLIT(instrument_id, ':')[OFFSET(0)] AS exchange,
         `interval`, source, session_date, flags, ingested_at
  FROM miraikakaku.bars
  WHERE session_date IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY event_id ORDER BY ingested_at DESC NULLS LAST, insert_id) = 1
),
bf AS (
  SELECT instrument_id, source, bar_date, flag
  FROM miraikakaku.bar_flags
  WHERE `interval` = '1d'
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY flag) = 1
),
bar_flag AS (
  SELECT b.insert_id, b.instrument_id, b.exchange, b.`interval`, b.session_date, f AS flag
  FROM b, UNNEST(b.flags) AS f
  UNION DISTINCT
  SELECT b.insert_id, b.instrument_id, b.exchange, b.`interval`, b.session_date, bf.flag
  FROM b
  JOIN bf ON bf.instrument_id = b.instrument_id AND bf.source = b.source
         AND bf.bar_date = b.session_date
  WHERE b.`interval` = '1d'
),
facts AS (
  SELECT session_date AS day, exchange, instrument_id, `interval`, 'bars_stored' AS metric,
         CAST(NULL AS STRING) AS name, COUNT(*) AS count
  FROM b
  GROUP BY day, exchange, instrument_id, `interval`
  UNION ALL
  SELECT session_date AS day, exchange, instrument_id, `interval`, 'flagged_bars' AS metric,
         CAST(NULL AS STRING) AS name, COUNT(DISTINCT insert_id) AS count
  FROM bar_flag
  GROUP BY day, exchange, instrument_id, `interval`
  UNION ALL
  SELECT session_date AS day, exchange, instrument_id, `interval`, 'flag' AS metric,
         flag AS name, COUNT(DISTINCT insert_id) AS count
  FROM bar_flag
  GROUP BY day, exchange, instrument_id, `interval`, name
),
levels AS (
  SELECT day, 'instrument' AS level, exchange, instrument_id, `interval`, metric, name, count
  FROM facts
  UNION ALL
  SELECT day, 'exchange' AS level, exchange, CAST(NULL AS STRING) AS instrument_id, `interval`,
         metric, name, SUM(count) AS count
  FROM facts
  GROUP BY day, exchange, `interval`, metric, name
  UNION ALL
  SELECT day, 'all' AS level, CAST(NULL AS STRING) AS exchange,
         CAST(NULL AS STRING) AS instrument_id, `interval`, metric, name, SUM(count) AS count
  FROM facts
  GROUP BY day, `interval`, metric, name
),
with_bars AS (
  SELECT l.*,
         SUM(IF(metric = 'bars_stored', count, 0)) OVER (
           PARTITION BY day, level, exchange, instrument_id, `interval`) AS bars
  FROM levels AS l
),
dead AS (
  SELECT DATE(event_time) AS day, reason
  FROM miraikakaku.dead_letters
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY dead_letter_id) = 1
)
SELECT day, level, exchange, instrument_id, `interval`, metric, name, count, bars,
       IF(bars > 0, count / bars, NULL) AS share
FROM with_bars
UNION ALL
SELECT day, 'all' AS level, CAST(NULL AS STRING) AS exchange,
       CAST(NULL AS STRING) AS instrument_id, CAST(NULL AS STRING) AS `interval`,
       'dead_letter' AS metric, reason AS name, COUNT(*) AS count,
       CAST(NULL AS INT64) AS bars, CAST(NULL AS FLOAT64) AS share
FROM dead
GROUP BY day, reason
