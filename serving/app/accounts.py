"""Accounts: the domain logic behind ``/v1/auth``, ``/v1/users/me`` and ``/v1/admin/users``,
plus the ``miraikakaku users`` and ``miraikakaku db`` commands.

Functions take an open SQLAlchemy ``Session`` (the request's, or one from ``Database.session()``)
and raise the API's domain errors (``serving.app.api.errors``), so the routes stay thin:

* ``create_user`` (email lower-cased and unique, password >= 10 characters, Argon2id hash),
  ``authenticate`` (same answer and timing for an unknown email and a wrong password);
* ``issue_tokens`` (access JWT + a refresh token of a new or given family), ``rotate_refresh_token``
  (single use: the presented token is marked used and replaced; presenting a used token again
  revokes its whole family and answers 401 - RFC 6819 §5.2.2.3), ``revoke_family``,
  ``sign_out_everywhere`` (bumps ``token_version`` so every access token dies, revokes every
  refresh token);
* ``update_profile``, ``change_password``, ``new_webhook_secret``, ``delete_account`` (the
  database's ``ON DELETE CASCADE`` removes refresh tokens, rules, notifications, deliveries);
* ``list_users`` (keyset pages by id), ``admin_update_user`` (role, is_active; the last active
  admin cannot be demoted or deactivated).

Command line (first admin of a fresh install)::

    miraikakaku db upgrade
    MIRAIKAKAKU_ADMIN_PASSWORD=... miraikakaku users create-admin --email admin@example.com
    miraikakaku users set-role hanako@example.com analyst
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import os
import secrets
import sys
import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from miraikakaku.settings import Settings
from serving.app.api.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from serving.app.core.security import (
    create_access_token,
    hash_password,
    hash_refresh_token,
    new_refresh_token,
    verify_password,
)
from serving.app.models import RefreshToken, Role, User, utc, utcnow
from serving.app.schemas import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, UserPublic

__all__ = [
    "TokenPair",
    "normalize_email",
    "check_password_policy",
    "create_user",
    "authenticate",
    "issue_tokens",
    "rotate_refresh_token",
    "revoke_family",
    "sign_out_everywhere",
    "update_profile",
    "change_password",
    "new_webhook_secret",
    "delete_account",
    "get_user",
    "list_users",
    "admin_update_user",
    "set_role",
    "user_public",
    "add_parsers",
    "run_command",
    "ADMIN_PASSWORD_ENV",
]

ADMIN_PASSWORD_ENV = "MIRAIKAKAKU_ADMIN_PASSWORD"
"""Environment variable ``users create-admin`` reads the password from (else it prompts)."""

_BAD_LOGIN = "incorrect email or password"
_BAD_REFRESH = "invalid refresh token"


@dataclasses.dataclass(frozen=True)
class TokenPair:
    """What a login or refresh returns.

    Attributes:
        access_token: signed JWT.
        expires_in: seconds until ``access_token`` expires.
        refresh_token: opaque single-use token (only its SHA-256 is stored).
        family_id: the refresh-token family (one per login).
    """

    access_token: str
    expires_in: int
    refresh_token: str
    family_id: str


def normalize_email(email: str) -> str:
    """The stored form of an email address: stripped and lower-cased."""
    return email.strip().lower()


def check_password_policy(password: str) -> None:
    """Refuse passwords shorter than 10 or longer than 256 characters.

    Raises:
        InvalidRequest: the password breaks the policy (422).
    """
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise InvalidRequest(f"the password must have {PASSWORD_MIN_LENGTH} to "
                             f"{PASSWORD_MAX_LENGTH} characters")


def user_public(user: User) -> UserPublic:
    """The public view of ``user`` (no hash, no webhook secret, no token version)."""
    return UserPublic(id=user.id, email=user.email, full_name=user.full_name, role=user.role,
                      locale=user.locale, is_active=user.is_active,
                      email_notifications=user.email_notifications, webhook_url=user.webhook_url,
                      has_webhook_secret=bool(user.webhook_secret),
                      created_at=utc(user.created_at))


def create_user(session: Session, *, email: str, password: str, full_name: str | None = None,
                locale: str = "en", role: Role | str = Role.user) -> User:
    """Create an account and flush it (``id`` is set; the caller's transaction commits).

    Args:
        session: open session.
        email: login name (stored lower-case).
        password: plain password (hashed with Argon2id; never stored).
        full_name: optional display name.
        locale: ``en`` or ``ja``.
        role: ``user`` for self-registration; ``admin``/``analyst`` only from the CLI or tests.

    Returns:
        The new ``User``.

    Raises:
        InvalidRequest: the password breaks the policy (422).
        Conflict: the email is already registered (409).
    """
    check_password_policy(password)
    email = normalize_email(email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("this email is already registered")
    user = User(email=email, password_hash=hash_password(password), full_name=full_name,
                locale=locale, role=Role(role).value)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as e:  # a concurrent registration of the same email won the race
        session.rollback()
        raise Conflict("this email is already registered") from e
    return user


def authenticate(session: Session, email: str, password: str) -> User:
    """The active user with this email and password.

    Raises:
        Unauthorized: unknown email, wrong password or inactive account - one message for all
            three, and a password hash is verified even for an unknown email (timing).
    """
    if len(password) > PASSWORD_MAX_LENGTH or len(email) > 254 or "\x00" in email:
        # no account has these: skip the database (PostgreSQL refuses NUL) and Argon2
        raise Unauthorized(_BAD_LOGIN)
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    ok = verify_password(password, user.password_hash if user is not None else None)
    if user is None or not ok or not user.is_active:
        raise Unauthorized(_BAD_LOGIN)
    return user


def issue_tokens(session: Session, user: User, settings: Settings, *,
                 family_id: str | None = None, now: dt.datetime | None = None
                 ) -> tuple[TokenPair, RefreshToken]:
    """Sign an access token and store a new refresh token for ``user``.

    Args:
        session: open session (the token row is flushed).
        user: the account.
        settings: ``secret_key``, ``access_token_minutes``, ``refresh_token_days``.
        family_id: the family to continue (a rotation); default a new one (a login).
        now: issue time (tests); default now.

    Returns:
        ``(TokenPair, RefreshToken row)``.
    """
    now = now or utcnow()
    access, expires = create_access_token(
        user_id=user.id, role=user.role, token_version=user.token_version,
        secret=settings.secret_key.get_secret_value(), minutes=settings.access_token_minutes,
        now=now)
    token, digest = new_refresh_token()
    row = RefreshToken(token_hash=digest, user_id=user.id, family_id=family_id or str(uuid.uuid4()),
                       issued_at=now,
                       expires_at=now + dt.timedelta(days=settings.refresh_token_days))
    session.add(row)
    session.flush()
    pair = TokenPair(access_token=access, expires_in=int((expires - now).total_seconds()),
                     refresh_token=token, family_id=row.family_id)
    return pair, row


def _revoke_family(session: Session, family_id: str, now: dt.datetime) -> int:
    result = session.execute(
        update(RefreshToken).where(RefreshToken.family_id == family_id,
                                   RefreshToken.revoked_at.is_(None)).values(revoked_at=now))
    return result.rowcount or 0


def rotate_refresh_token(session: Session, token: str, settings: Settings, *,
                         now: dt.datetime | None = None) -> TokenPair:
    """Exchange a refresh token for a new access token and a new refresh token.

    The presented token is marked used (atomically: of two concurrent uses, one wins) and points
    to its replacement. A token that was already used is a replay - the legitimate client or a
    thief holds a copy - so the whole family is revoked (committed before the 401), and every
    token of that login, including the newest, stops working.

    Raises:
        Unauthorized: unknown, expired, revoked or reused token, or an inactive user (401).
    """
    now = now or utcnow()
    row = session.scalar(select(RefreshToken).where(
        RefreshToken.token_hash == hash_refresh_token(token)))
    if row is None:
        raise Unauthorized(_BAD_REFRESH)
    if row.used_at is not None:
        _revoke_family(session, row.family_id, now)
        session.commit()
        raise Unauthorized("refresh token reused: this login was signed out")
    if row.revoked_at is not None or utc(row.expires_at) <= now:
        raise Unauthorized(_BAD_REFRESH)
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise Unauthorized(_BAD_REFRESH)
    claimed = session.execute(
        update(RefreshToken).where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None),
                                   RefreshToken.revoked_at.is_(None))
        .values(used_at=now)).rowcount
    if claimed != 1:  # a concurrent request used it first: a replay as well
        _revoke_family(session, row.family_id, now)
        session.commit()
        raise Unauthorized("refresh token reused: this login was signed out")
    pair, new_row = issue_tokens(session, user, settings, family_id=row.family_id, now=now)
    session.execute(update(RefreshToken).where(RefreshToken.id == row.id)
                    .values(replaced_by=new_row.id))
    return pair


def revoke_family(session: Session, token: str, *, now: dt.datetime | None = None) -> None:
    """Log out one login: revoke every refresh token of the presented token's family.

    Idempotent for a known token (already revoked or used is fine).

    Raises:
        Unauthorized: the token is unknown (401).
    """
    row = session.scalar(select(RefreshToken).where(
        RefreshToken.token_hash == hash_refresh_token(token)))
    if row is None:
        raise Unauthorized(_BAD_REFRESH)
    _revoke_family(session, row.family_id, now or utcnow())


def sign_out_everywhere(session: Session, user: User, *, now: dt.datetime | None = None) -> None:
    """Bump ``token_version`` (every access token of ``user`` dies) and revoke all its refresh
    tokens."""
    user.token_version = (user.token_version or 0) + 1
    session.execute(update(RefreshToken).where(RefreshToken.user_id == user.id,
                                               RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=now or utcnow()))
    session.flush()


def update_profile(session: Session, user: User, changes: dict[str, object]) -> User:
    """Apply profile changes (already validated: ``UserUpdate.model_dump(exclude_unset=True)``).

    Only ``full_name``, ``locale``, ``email_notifications`` and ``webhook_url`` are accepted.

    Raises:
        InvalidRequest: another field (a programming error upstream; 422).
    """
    allowed = {"full_name", "locale", "email_notifications", "webhook_url"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        setattr(user, name, str(value) if name == "webhook_url" and value is not None else value)
    session.flush()
    return user


def change_password(session: Session, user: User, current: str, new: str) -> None:
    """Set a new password after checking the current one; signs out everywhere.

    Raises:
        Forbidden: ``current`` is wrong (403; the session itself stays valid).
        InvalidRequest: ``new`` breaks the policy (422).
    """
    if not verify_password(current, user.password_hash):
        raise Forbidden("the current password is wrong")
    check_password_policy(new)
    user.password_hash = hash_password(new)
    sign_out_everywhere(session, user)


def new_webhook_secret(session: Session, user: User) -> str:
    """Generate and store a new random webhook signing secret (256 bits, URL-safe text)."""
    user.webhook_secret = secrets.token_urlsafe(32)
    session.flush()
    return user.webhook_secret


def delete_account(session: Session, user: User, password: str) -> None:
    """Delete ``user`` and, through ``ON DELETE CASCADE``, every row that belongs to it.

    Raises:
        Forbidden: wrong password (403).
    """
    if not verify_password(password, user.password_hash):
        raise Forbidden("the password is wrong")
    user_id = user.id
    session.expunge(user)
    session.execute(delete(User).where(User.id == user_id))
    session.flush()


def get_user(session: Session, user_id: int) -> User:
    """The user with ``user_id``.

    Raises:
        NotFound: no such user (404).
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def list_users(session: Session, *, after_id: int | None = None, limit: int = 100,
               role: str | None = None) -> tuple[list[User], int | None]:
    """One page of users by id (keyset pagination).

    Returns:
        ``(users, next_after_id)``; ``next_after_id`` is None on the last page.
    """
    query = select(User).order_by(User.id).limit(limit + 1)
    if after_id is not None:
        query = query.where(User.id > after_id)
    if role is not None:
        query = query.where(User.role == role)
    users = list(session.scalars(query))
    more = len(users) > limit
    users = users[:limit]
    return users, (users[-1].id if more else None)


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.role == Role.admin.value, User.is_active.is_(True))) or 0


def admin_update_user(session: Session, user: User, *, role: str | None = None,
                      is_active: bool | None = None) -> User:
    """Change ``user``'s role and/or active flag (admin only; checked by the route).

    Deactivating signs the user out everywhere.

    Raises:
        Conflict: the change would leave no active admin (409).
    """
    demote = role is not None and role != Role.admin.value
    deactivate = is_active is False
    if (user.role == Role.admin.value and user.is_active and (demote or deactivate)
            and _active_admins(session) <= 1):
        raise Conflict("this is the last active admin: promote another admin first")
    if role is not None:
        user.role = Role(role).value
    if is_active is not None:
        user.is_active = is_active
        if not is_active:
            sign_out_everywhere(session, user)
    session.flush()
    return user


def set_role(session: Session, email: str, role: Role | str) -> User:
    """Set the role of the user with ``email`` (the CLI's ``users set-role``).

    Raises:
        NotFound: no such user.
        Conflict: it would demote the last active admin.
    """
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user with email {normalize_email(email)!r}")
    return admin_update_user(session, user, role=Role(role).value)


# -- command line ------------------------------------------------------------------------------

def add_parsers(subparsers) -> None:  # noqa: ANN001 - argparse's private subparsers type
    """Add ``users create-admin|set-role`` and ``db upgrade`` to the ``miraikakaku`` CLI."""
    p_users = subparsers.add_parser("users", help="Manage accounts (first admin, roles).")
    users = p_users.add_subparsers(dest="action", required=True)
    create = users.add_parser(
        "create-admin", help="Create an admin account (or make an existing account admin).",
        description=f"Create an admin. The password comes from ${ADMIN_PASSWORD_ENV} or is "
                    "prompted for (never a flag: it would stay in the shell history).")
    create.add_argument("--email", required=True, help="Login email of the admin.")
    create.add_argument("--full-name", default=None, help="Display name.")
    set_r = users.add_parser("set-role", help="Set the role of an account.")
    set_r.add_argument("email", help="Login email.")
    set_r.add_argument("role", choices=[r.value for r in Role], help="New role.")
    p_db = subparsers.add_parser("db", help="Application database (users, rules, notifications).")
    db_sub = p_db.add_subparsers(dest="action", required=True)
    db_sub.add_parser("upgrade", help="Migrate settings.app_database_url to the newest schema.")


def _admin_password() -> str:
    password = os.environ.get(ADMIN_PASSWORD_ENV)
    if password:
        return password
    password = getpass.getpass("Admin password: ")
    if password != getpass.getpass("Repeat it: "):
        raise SystemExit("the passwords differ")
    return password


def run_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run ``users create-admin|set-role`` or ``db upgrade``; returns the exit code."""
    from miraikakaku.settings import get_settings
    from serving.app.api.errors import ApiError
    from serving.app.db import Database, migrate

    settings = settings or get_settings()
    url = settings.app_database_url
    if args.command == "db":
        migrate(url)
        print(f"database at {_safe_url(url)} is at the newest revision")
        return 0
    db = Database.connect(url)
    try:
        with db.session() as session:
            if args.action == "create-admin":
                existing = session.scalar(
                    select(User).where(User.email == normalize_email(args.email)))
                if existing is not None:
                    admin_update_user(session, existing, role=Role.admin.value, is_active=True)
                    print(f"{existing.email} (id {existing.id}) is now admin")
                else:
                    user = create_user(session, email=args.email, password=_admin_password(),
                                       full_name=args.full_name, role=Role.admin)
                    print(f"created admin {user.email} (id {user.id})")
            else:
                user = set_role(session, args.email, args.role)
                print(f"{user.email} (id {user.id}) is now {user.role}")
    except ApiError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    finally:
        db.close()
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving.app.accounts users ...`` (same as ``miraikakaku users ...``)."""
    parser = argparse.ArgumentParser(prog="miraikakaku")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
