"""Serving: the read API (FastAPI) over the serving store; see ``serving.app``."""
