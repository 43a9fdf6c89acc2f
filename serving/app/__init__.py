"""The MiraiKakaku read API: ``create_app(settings, store)`` builds it, ``server.serve`` runs it."""

from serving.app.main import create_app

__all__ = ["create_app"]
