"""Routes ``/v1/alert-rules``: a user's own alert rules (create, list, read, update, delete).

The notifier (``miraikakaku notify``) picks changes up within ``notify_poll_seconds`` without a
restart. ``symbol`` is resolved through the serving store to an exchange-qualified instrument id
(unknown → 404); ``params`` are validated per ``kind`` (``serving.app.notification_schemas``).
Reading needs ``alerts:read``, changing ``alerts:write``; another user's rule answers 404, as a
missing one does. Try it::

    curl -X POST localhost:8000/v1/alert-rules -H "Authorization: Bearer $TOKEN" \\
      -H 'content-type: application/json' \\
      -d '{"symbol": "AAPL", "kind": "price_above", "params": {"level": 180}}'
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.app.api.deps import (
    ID_MAX,
    SessionDep,
    StoreDep,
    find_instrument,
    require_permission,
)
from serving.app.api.errors import ERROR_RESPONSES, InvalidRequest, NotFound
from serving.app.models import AlertRule, User
from serving.app.notification_schemas import (
    AlertRuleCreate,
    AlertRulePublic,
    AlertRulesPublic,
    AlertRuleUpdate,
    validate_params,
)

__all__ = ["router", "MAX_RULES_PER_USER"]

router = APIRouter(prefix="/v1/alert-rules", tags=["alert rules"], responses=ERROR_RESPONSES)

MAX_RULES_PER_USER = 200
"""A user has at most this many rules (creating more is a 422)."""

Reader = Annotated[User, Depends(require_permission("alerts:read"))]
Writer = Annotated[User, Depends(require_permission("alerts:write"))]
RuleId = Annotated[int, Path(ge=1, le=ID_MAX, description="The rule's id.")]


def _own_rule(session: Session, user: User, rule_id: int) -> AlertRule:
    rule = session.get(AlertRule, rule_id)
    if rule is None or rule.user_id != user.id:
        raise NotFound(f"no alert rule {rule_id}")
    return rule


def _invalid(e: ValidationError, where: str) -> InvalidRequest:
    details = [{"loc": ["body", where, *map(str, err["loc"])], "msg": err["msg"],
                "type": err["type"]} for err in e.errors()]
    return InvalidRequest(f"invalid {where}", details=details)


@router.get("", response_model=AlertRulesPublic, summary="My alert rules")
def read_rules(
    *,
    session: SessionDep,
    user: Reader,
    symbol: Annotated[str | None, Query(max_length=64, description="Only rules on this "
                                        "instrument id (`XNAS:AAPL`).")] = None,
) -> AlertRulesPublic:
    """The user's rules, oldest first."""
    stmt = select(AlertRule).where(AlertRule.user_id == user.id).order_by(AlertRule.id)
    if symbol is not None:
        stmt = stmt.where(func.upper(AlertRule.instrument_id) == symbol.upper())
    data = [AlertRulePublic.model_validate(r) for r in session.scalars(stmt)]
    return AlertRulesPublic(data=data, count=len(data))


@router.post("", response_model=AlertRulePublic, status_code=201, summary="Create a rule")
def create_rule(
    *,
    session: SessionDep,
    store: StoreDep,
    user: Writer,
    body: Annotated[AlertRuleCreate, Body()],
) -> AlertRulePublic:
    """Create a rule on ``symbol``.

    Raises:
        NotFound: unknown symbol (404).
        InvalidRequest: the user already has ``MAX_RULES_PER_USER`` rules (422).
    """
    instrument = find_instrument(store, body.symbol)
    if instrument is None:
        raise NotFound(f"unknown symbol {body.symbol!r}")
    n = session.scalar(select(func.count(AlertRule.id)).where(AlertRule.user_id == user.id))
    if (n or 0) >= MAX_RULES_PER_USER:
        raise InvalidRequest(f"at most {MAX_RULES_PER_USER} alert rules per user")
    rule = AlertRule(
        user_id=user.id, instrument_id=instrument.instrument_id, kind=body.kind,
        name=body.name or f"{instrument.symbol} {body.kind}",
        params=body.params.model_dump(exclude_none=True), channels=list(body.channels),
        cooldown_seconds=body.cooldown_seconds, enabled=body.enabled)
    session.add(rule)
    session.flush()
    session.refresh(rule)
    return AlertRulePublic.model_validate(rule)


@router.get("/{rule_id}", response_model=AlertRulePublic, summary="One of my rules")
def read_rule(*, session: SessionDep, user: Reader, rule_id: RuleId) -> AlertRulePublic:
    """The rule ``rule_id`` (404 when missing or another user's)."""
    return AlertRulePublic.model_validate(_own_rule(session, user, rule_id))


@router.patch("/{rule_id}", response_model=AlertRulePublic, summary="Update a rule")
def update_rule(
    *,
    session: SessionDep,
    user: Writer,
    rule_id: RuleId,
    body: AlertRuleUpdate,
) -> AlertRulePublic:
    """Change a rule's name, params (validated for its kind), channels, cooldown or enabled.

    Raises:
        NotFound: no such rule of the user (404).
        InvalidRequest: params invalid for the rule's kind (422).
    """
    rule = _own_rule(session, user, rule_id)
    changes = body.model_dump(exclude_unset=True)
    if "params" in changes:
        if changes["params"] is None:
            raise InvalidRequest("params cannot be null")
        try:
            changes["params"] = validate_params(rule.kind, changes["params"])
        except ValidationError as e:
            raise _invalid(e, "params") from e
    for key, value in changes.items():
        if value is None:
            raise InvalidRequest(f"{key} cannot be null")
        setattr(rule, key, value)
    session.flush()
    session.refresh(rule)
    return AlertRulePublic.model_validate(rule)


@router.delete("/{rule_id}", status_code=204, response_class=Response, summary="Delete a rule")
def delete_rule(*, session: SessionDep, user: Writer, rule_id: RuleId) -> Response:
    """Delete the rule (its notifications stay, with ``rule_id`` null)."""
    session.delete(_own_rule(session, user, rule_id))
    return Response(status_code=204)
