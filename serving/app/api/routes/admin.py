"""Routes under ``/v1/admin/users`` (role ``admin``: permissions ``users:read`` and
``users:write``): list accounts page by page, read one, change its role or active flag.
Other roles get 403, anonymous callers 401.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from serving.app import accounts
from serving.app.api.deps import ID_MAX, SessionDep, require_permission
from serving.app.api.errors import InvalidRequest
from serving.app.models import User
from serving.app.schemas import UserAdminUpdate, UserPublic, UsersPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin/users", tags=["admin"],
                   responses={401: {"description": "Not logged in, or an invalid token."},
                              403: {"description": "The caller is not an admin."}})

UsersReader = Annotated[User, Depends(require_permission("users:read"))]
UsersWriter = Annotated[User, Depends(require_permission("users:write"))]
UserIdPath = Annotated[int, Path(ge=1, le=ID_MAX, description="User id.")]


def _cursor(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > ID_MAX:
        raise InvalidRequest("malformed cursor: pass back `next_cursor` as it was returned",
                             details=[{"loc": ["query", "cursor"], "msg": "malformed cursor",
                                       "type": "value_error"}])
    return int(text)


@router.get("", response_model=UsersPublic, summary="List users")
def read_users(*, admin: UsersReader, session: SessionDep,
               cursor: Annotated[str | None, Query(max_length=32,
                                                   description="`next_cursor` of the previous "
                                                               "page.")] = None,
               limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
               role: Annotated[str | None, Query(pattern="^(admin|analyst|user)$",
                                                 description="Only this role.")] = None,
               ) -> UsersPublic:
    """Accounts by id, ``limit`` per page (keyset pagination: stable while users register)."""
    users, next_id = accounts.list_users(session, after_id=_cursor(cursor), limit=limit,
                                         role=role)
    data = [accounts.user_public(u) for u in users]
    return UsersPublic(data=data, count=len(data),
                       next_cursor=str(next_id) if next_id is not None else None)


@router.get("/{user_id}", response_model=UserPublic, summary="One user",
            responses={404: {"description": "No such user."}})
def read_user(*, user_id: UserIdPath, admin: UsersReader, session: SessionDep) -> UserPublic:
    """One account by id."""
    return accounts.user_public(accounts.get_user(session, user_id))


@router.patch("/{user_id}", response_model=UserPublic, summary="Change role or active flag",
              responses={404: {"description": "No such user."},
                         409: {"description": "It would leave no active admin."}})
def update_user(*, user_id: UserIdPath, body: UserAdminUpdate, admin: UsersWriter,
                session: SessionDep) -> UserPublic:
    """Set ``role`` (``admin``, ``analyst``, ``user``) and/or ``is_active``; deactivating signs
    the user out everywhere. Takes effect on the user's next request."""
    user = accounts.get_user(session, user_id)
    accounts.admin_update_user(session, user, role=body.role, is_active=body.is_active)
    return accounts.user_public(user)
