-- instruments: reference data, one row per instrument, loaded from miraikakaku/reference/instruments.csv
-- (Warehouse.load_instruments; on BigQuery: bq load, see the README). Small: not partitioned.
CREATE TABLE IF NOT EXISTS miraikakaku.instruments (
  instrument_id STRING NOT NULL OPTIONS(description="exchange-qualified id MIC:CODE, e.g. XNAS:AAPL"),
  symbol STRING NOT NULL OPTIONS(description="common alias, e.g. AAPL, 7203.T"),
  mic STRING OPTIONS(description="ISO 10383 market identifier code; NULL for an index"),
  calendar STRING NOT NULL OPTIONS(description="exchange_calendars code of the sessions, e.g. XNYS"),
  currency STRING NOT NULL OPTIONS(description="ISO 4217 quote currency"),
  timezone STRING NOT NULL OPTIONS(description="IANA time zone of the exchange"),
  kind STRING NOT NULL OPTIONS(description="stock, etf or index"),
  name STRING OPTIONS(description="company or index name"),
  listing_date DATE OPTIONS(description="first session known: a Lean map file's first date, else the first date in the data (a lower bound)"),
  delisting_date DATE OPTIONS(description="last session (Lean map files, data segments); NULL while listed")
)
CLUSTER BY instrument_id
OPTIONS(description="Instrument reference data (miraikakaku/reference/instruments.csv).");
