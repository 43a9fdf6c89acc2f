"""Run the read API with uvicorn: ``serve(host, port, settings)``, as ``miraikakaku serve`` does.

Example: ``python -m serving.app.server`` listens on ``settings.api_host:settings.api_port``
(``MIRAIKAKAKU_API_HOST`` / ``MIRAIKAKAKU_API_PORT``, default 127.0.0.1:8000).
"""

import uvicorn

from miraikakaku.settings import Settings, get_settings
from serving.app.main import create_app
from serving.app.middleware import logging_config

__all__ = ["serve"]


def serve(host: str | None = None, port: int | None = None,
          settings: Settings | None = None) -> None:
    """Serve the API until interrupted (blocking).

    Args:
        host: interface to bind; default ``settings.api_host``.
        port: TCP port; default ``settings.api_port``.
        settings: runtime settings; default ``get_settings()``.
    """
    settings = settings if settings is not None else get_settings()
    uvicorn.run(create_app(settings),
                host=host if host is not None else settings.api_host,
                port=port if port is not None else settings.api_port,
                log_level="info", log_config=logging_config(), access_log=False)


if __name__ == "__main__":  # pragma: no cover - manual start
    serve()
