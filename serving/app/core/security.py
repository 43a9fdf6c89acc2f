"""Passwords, access tokens and refresh tokens.

* Passwords: Argon2id through ``pwdlib`` (``hash_password``/``verify_password``); the hash
  carries its parameters, so they can be raised later (``verify_and_update``).
* Access tokens: JWTs signed with HS256 under ``settings.secret_key`` (PyJWT). Decoding pins the
  algorithm list to ``["HS256"]`` and requires ``exp``, ``iat``, ``sub`` and ``typ``, so tokens
  with ``alg: none``, another algorithm (the HS/RS confusion: an RS256 token, or one "signed"
  with a public key as HMAC secret) or a missing claim are refused (RFC 8725 §3.1, §3.2).
* Refresh tokens: 256-bit random strings (``secrets.token_urlsafe``); only their SHA-256 is
  stored, so a database leak does not leak usable tokens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

__all__ = [
    "ALGORITHM",
    "AccessClaims",
    "InvalidToken",
    "hash_password",
    "verify_password",
    "create_access_token",
    "decode_access_token",
    "new_refresh_token",
    "hash_refresh_token",
]

ALGORITHM = "HS256"
"""The only JWT algorithm issued and accepted."""

_PASSWORDS = PasswordHash((Argon2Hasher(),))
_DUMMY_HASH = _PASSWORDS.hash("timing-equaliser")


class InvalidToken(Exception):
    """A token that is malformed, forged, expired, of the wrong type or revoked."""


@dataclasses.dataclass(frozen=True)
class AccessClaims:
    """The claims of a valid access token.

    Attributes:
        user_id: ``sub`` as an integer.
        role: the role when the token was issued (the database's role wins; see deps).
        token_version: the user's ``token_version`` when issued.
        expires_at: ``exp`` as aware UTC.
    """

    user_id: int
    role: str
    token_version: int
    expires_at: dt.datetime


def hash_password(password: str) -> str:
    """Argon2id hash of ``password`` (PHC string)."""
    return _PASSWORDS.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether ``password`` matches ``password_hash``.

    With ``password_hash=None`` (unknown user) a dummy hash is still verified, so an attacker
    cannot tell unknown emails from wrong passwords by timing.
    """
    if password_hash is None:
        _PASSWORDS.verify(password, _DUMMY_HASH)
        return False
    try:
        return _PASSWORDS.verify(password, password_hash)
    except Exception:  # a corrupt hash is a failed login, not a 500
        return False


def create_access_token(*, user_id: int, role: str, token_version: int, secret: str,
                        minutes: float, now: dt.datetime | None = None) -> tuple[str, dt.datetime]:
    """Sign an access token.

    Args:
        user_id: the user (``sub``).
        role: the user's role (informative; authorisation reads the database).
        token_version: the user's ``token_version`` (bumped on password change/logout-all).
        secret: the HMAC key (``settings.secret_key``).
        minutes: lifetime.
        now: issue time (tests); default the current UTC time.

    Returns:
        ``(token, expires_at)`` with ``expires_at`` aware UTC.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    expires = now + dt.timedelta(minutes=minutes)
    claims: dict[str, Any] = {"sub": str(user_id), "role": role, "tv": token_version,
                              "typ": "access", "iat": now, "exp": expires,
                              "jti": secrets.token_hex(8)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def decode_access_token(token: str, *, secret: str) -> AccessClaims:
    """Verify and decode an access token.

    Raises:
        InvalidToken: bad signature, another algorithm (``none``, RS256, ...), expired, missing
            or malformed claims, or not an access token.
    """
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "iat", "sub", "typ"]})
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from e
    if claims.get("typ") != "access":
        raise InvalidToken("not an access token")
    try:
        return AccessClaims(user_id=int(claims["sub"]), role=str(claims.get("role", "")),
                            token_version=int(claims.get("tv", -1)),
                            expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc))
    except (TypeError, ValueError) as e:
        raise InvalidToken(f"malformed claims: {e}") from e


def new_refresh_token() -> tuple[str, str]:
    """A new refresh token: ``(token, sha256_hex)``; store only the hash."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    """SHA-256 (hex) of a refresh token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
