"""HTTP layer of the read API: dependencies (``deps``), error mapping (``errors``), routes."""
