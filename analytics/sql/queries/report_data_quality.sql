-- report_data_quality: data-quality trend per month (report `data_quality`): bars stored,
-- flagged bars, each flag and each dead-letter reason.
--
-- Parameters: @symbols ARRAY<STRING> (instrument ids; empty: the whole platform, dead letters
-- included; given: those instruments' bars and flags, no dead letters, which have no trusted
-- instrument), @start DATE, @end DATE (inclusive, on the day).
-- Input: data_quality_trend (level 'all' or 'instrument'), summed per calendar month of the day
-- (bars: exchange-local session date; dead letters: UTC date of the event).
--   item  = 'bars_stored', 'flagged_bars', 'flag:<name>' or 'dead_letter:<reason>';
--   count = the sum over the month; bars = bars stored in the month (of the instruments);
--   share = count / bars (NULL for dead letters). Without a date window (start and end at
--   their defaults 0001-01-01 and 9999-12-31), dead letters whose time could not be read
--   (unparseable lines) are counted in a row whose month is NULL.
WITH d AS (
  SELECT DATE_TRUNC(day, MONTH) AS month,
         IF(name IS NULL, metric, CONCAT(metric, ':', name)) AS item,
         metric, count
  FROM miraikakaku.data_quality_trend
  WHERE (day BETWEEN @start AND @end
         OR (day IS NULL AND @start = DATE '0001-01-01' AND @end = DATE '9999-12-31'))
    AND ((ARRAY_LENGTH(@symbols) = 0 AND level = 'all')
         OR (ARRAY_LENGTH(@symbols) > 0 AND level = 'instrument'
             AND instrument_id IN UNNEST(@symbols)))
),
months AS (
  SELECT month, SUM(count) AS bars
  FROM d
  WHERE metric = 'bars_stored'
  GROUP BY month
)
SELECT d.month, d.item, CAST(SUM(d.count) AS INT64) AS count,
       IF(MIN(d.metric) = 'dead_letter', NULL, CAST(MIN(m.bars) AS INT64)) AS bars,
       IF(MIN(d.metric) = 'dead_letter', NULL, SAFE_DIVIDE(SUM(d.count), MIN(m.bars))) AS share
FROM d
LEFT JOIN months AS m ON m.month = d.month
GROUP BY d.month, d.item
ORDER BY d.month, d.item
