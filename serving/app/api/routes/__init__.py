"""One router per resource: ``symbols`` (/v1/symbols), ``alerts`` (/v1/alerts), ``health``."""
