"""Test helper: a user row written straight into the app database and a signed access token.

Used by the gateway, pagination and OpenAPI-fuzz tests, which must not depend on how the auth
routes or the ``client`` fixture log in. Not a test module (no ``test_`` prefix).
"""

from fastapi import FastAPI

from serving.app.core.security import create_access_token, hash_password
from serving.app.models import User

__all__ = ["make_user_token", "auth_header"]


def make_user_token(app: FastAPI, *, email: str, role: str = "analyst") -> tuple[int, str]:
    """Insert an active user with ``role`` into ``app.state.db`` (the lifespan must have run)
    and return ``(user_id, access_token)`` signed with the app's ``settings.secret_key``."""
    with app.state.db.session() as session:
        user = User(email=email, password_hash=hash_password("correct horse battery"), role=role)
        session.add(user)
        session.flush()
        user_id, version = user.id, user.token_version
    settings = app.state.settings
    token, _ = create_access_token(user_id=user_id, role=role, token_version=version,
                                   secret=settings.secret_key.get_secret_value(), minutes=30)
    return user_id, token


def auth_header(token: str) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``."""
    return {"Authorization": f"Bearer {token}"}
