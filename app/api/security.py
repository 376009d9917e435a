"""JWT wiring and the ``current_actor`` every protected endpoint starts from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, request
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    get_current_user,
    verify_jwt_in_request,
)

from app.domain.access import Actor, Role
from app.domain.errors import PermissionDenied
from app.extensions import jwt
from app.models import User
from app.services import users
from app.services.access import actor_for
from app.services.uow import UnitOfWork

F = TypeVar("F", bound=Callable[..., Any])
BEARER = [{"bearerAuth": []}]


def init_jwt(app: Flask) -> None:
    @jwt.user_identity_loader
    def _identity(user: User) -> str:
        return str(user.id)

    @jwt.additional_claims_loader
    def _claims(user: User) -> dict[str, Any]:
        return {"role": user.role}

    @jwt.user_lookup_loader
    def _lookup(_header: dict[str, Any], payload: dict[str, Any]) -> User | None:
        return users.active_user(UnitOfWork(), int(payload["sub"]))

    @jwt.token_in_blocklist_loader
    def _revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        return users.is_revoked(UnitOfWork(), payload["jti"])


def issue_tokens(user: User) -> dict[str, Any]:
    access = create_access_token(identity=user)
    refresh = create_refresh_token(identity=user)
    return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
            "role": user.role, "user_id": user.id}


def token_expiry(payload: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(payload["exp"]), UTC)


def current_actor() -> Actor:
    """The authenticated caller, verified once per request.

    Kept on the request (not on ``g``, whose app context may outlive one request)."""
    cached = request.environ.get(_ACTOR_KEY)
    if cached is None:
        verify_jwt_in_request()
        cached = request.environ[_ACTOR_KEY] = actor_for(get_current_user())
    return cast(Actor, cached)


_ACTOR_KEY = "evc.actor"


def requires(*roles: Role) -> Callable[[F], F]:
    """Authenticate, and (if roles are given) insist on one of them."""

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            actor = current_actor()
            if roles and actor.role not in roles:
                raise PermissionDenied("your role may not do this", role=actor.role.value)
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


STAFF = (Role.PLATFORM_ADMIN, Role.POWER_COMPANY, Role.PROPERTY_OPERATOR)
MANAGERS = (Role.PLATFORM_ADMIN, Role.PROPERTY_OPERATOR)
