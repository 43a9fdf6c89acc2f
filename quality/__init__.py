"""Data quality: Great Expectations suites with block/flag severities (issue 6).

* ``quality.suites``: the expectation suites in code (price events, bars, features, predictions).
* ``quality.validate``: frames from records, derived per-instrument columns, one GX validation
  call per frame → ``FrameValidation`` (which rows are blocked, which carry which flags).
* ``quality.report``: the batch command ``miraikakaku quality`` (Data Docs, JSON summary,
  failing rows).
"""
