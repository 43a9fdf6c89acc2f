"""Routes under ``/v1/auth``: register, log in (OAuth2 password flow), refresh, log out.

Tokens: a short-lived access JWT (``settings.access_token_minutes``) sent as
``Authorization: Bearer …``, and a single-use refresh token (``settings.refresh_token_days``)
that ``/refresh`` exchanges for a new pair; presenting a spent refresh token again signs that
login out (the whole token family is revoked). Try it::

    curl -X POST localhost:8000/v1/auth/register -H 'content-type: application/json' \\
         -d '{"email": "hanako@example.com", "password": "correct horse battery"}'
    curl -X POST localhost:8000/v1/auth/login -d username=hanako@example.com \\
         -d 'password=correct horse battery'
"""

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from serving.app import accounts
from serving.app.api.deps import CurrentUser, SessionDep, SettingsDep
from serving.app.schemas import RefreshRequest, TokenPublic, UserPublic, UserRegister

__all__ = ["router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])

_401 = {401: {"description": "Wrong credentials, or an invalid, expired, revoked or reused "
                             "token."}}


def _token(pair: accounts.TokenPair) -> TokenPublic:
    return TokenPublic(access_token=pair.access_token, expires_in=pair.expires_in,
                       refresh_token=pair.refresh_token)


@router.post("/register", response_model=UserPublic, status_code=status.HTTP_201_CREATED,
             summary="Create an account",
             responses={409: {"description": "The email is already registered."},
                        422: {"description": "Invalid email, password shorter than 10 "
                                             "characters, or an unknown field (e.g. `role`)."}})
def create_account(*, body: UserRegister, session: SessionDep) -> UserPublic:
    """Register a new account with role ``user`` (roles are changed by admins only)."""
    user = accounts.create_user(session, email=body.email, password=body.password,
                                full_name=body.full_name, locale=body.locale)
    return accounts.user_public(user)


@router.post("/login", response_model=TokenPublic, summary="Log in (OAuth2 password flow)",
             responses=_401)
def create_login(*, form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep,
                 settings: SettingsDep) -> TokenPublic:
    """Form fields ``username`` (the email) and ``password``; answers an access token and a
    refresh token. A wrong email or password is the same 401."""
    user = accounts.authenticate(session, form.username, form.password)
    pair, _ = accounts.issue_tokens(session, user, settings)
    return _token(pair)


@router.post("/refresh", response_model=TokenPublic, summary="Rotate the refresh token",
             responses=_401)
def create_refresh(*, body: RefreshRequest, session: SessionDep,
                   settings: SettingsDep) -> TokenPublic:
    """Exchange a refresh token for a new access token and a new refresh token (the old one is
    spent; using it again revokes this login's every token)."""
    return _token(accounts.rotate_refresh_token(session, body.refresh_token, settings))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Log out this login",
             responses=_401)
def delete_login(*, body: RefreshRequest, session: SessionDep) -> None:
    """Revoke the presented refresh token's family (this login; access tokens expire soon)."""
    accounts.revoke_family(session, body.refresh_token)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT,
             summary="Log out everywhere", responses=_401)
def delete_logins(*, user: CurrentUser, session: SessionDep) -> None:
    """Revoke every access token (``token_version`` bump) and refresh token of the caller."""
    accounts.sign_out_everywhere(session, user)
