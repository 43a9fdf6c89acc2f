"""Routes under ``/v1/users/me``: the caller's own profile, password, webhook secret and
account deletion. There is no ``/v1/users/{id}``: a user reaches only its own data (admins use
``/v1/admin/users``). Try it: ``curl -H "Authorization: Bearer $TOKEN" localhost:8000/v1/users/me``.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, status

from serving.app import accounts
from serving.app.api.deps import SessionDep, require_permission
from serving.app.models import User
from serving.app.schemas import (
    AccountDelete,
    PasswordChange,
    UserPublic,
    UserUpdate,
    WebhookSecretPublic,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/users", tags=["users"],
                   responses={401: {"description": "Not logged in, or an invalid token."}})

ProfileReader = Annotated[User, Depends(require_permission("profile:read"))]
ProfileWriter = Annotated[User, Depends(require_permission("profile:write"))]


@router.get("/me", response_model=UserPublic, summary="My profile")
def read_user_me(*, user: ProfileReader) -> UserPublic:
    """The caller's account."""
    return accounts.user_public(user)


@router.patch("/me", response_model=UserPublic, summary="Update my profile",
              responses={422: {"description": "Invalid value or a field that cannot be changed "
                                                "here (`role`, `email`, `is_active`, ...)."}})
def update_user_me(*, body: UserUpdate, user: ProfileWriter, session: SessionDep) -> UserPublic:
    """Change ``full_name``, ``locale`` (``en``/``ja``), ``email_notifications`` or
    ``webhook_url``; fields left out stay as they are."""
    accounts.update_profile(session, user, body.model_dump(exclude_unset=True))
    return accounts.user_public(user)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT,
             summary="Change my password",
             responses={403: {"description": "The current password is wrong."}})
def update_password_me(*, body: PasswordChange, user: ProfileWriter, session: SessionDep) -> None:
    """Set a new password; every access and refresh token of the account stops working."""
    accounts.change_password(session, user, body.current_password, body.new_password)


@router.post("/me/webhook-secret", response_model=WebhookSecretPublic,
             status_code=status.HTTP_201_CREATED, summary="New webhook signing secret")
def create_webhook_secret_me(*, user: ProfileWriter, session: SessionDep) -> WebhookSecretPublic:
    """Generate a new HMAC-SHA256 key for the caller's webhooks; it is shown only this once
    (the previous key stops verifying)."""
    return WebhookSecretPublic(webhook_secret=accounts.new_webhook_secret(session, user))


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT, summary="Delete my account",
               responses={403: {"description": "The password is wrong."}})
def delete_user_me(*, body: AccountDelete, user: ProfileWriter, session: SessionDep) -> None:
    """Delete the account and everything that belongs to it (refresh tokens, alert rules,
    notifications and their deliveries); the password confirms."""
    accounts.delete_account(session, user, body.password)
