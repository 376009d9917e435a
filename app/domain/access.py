"""Who may see and change what: roles and tenant scope, in plain Python.

The rule everyone relies on: an operator of property company A can never read
or change anything of property company B. Objects outside the caller's scope
are reported as *not found*, so their existence does not leak either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.domain.errors import NotFound, PermissionDenied


class Role(StrEnum):
    PLATFORM_ADMIN = "platform_admin"  # runs the platform: everything
    POWER_COMPANY = "power_company"  # read-all monitoring of its power company's tree
    PROPERTY_OPERATOR = "property_operator"  # runs its property company's communities
    RESIDENT = "resident"  # charges from bound accounts
    VISITOR = "visitor"  # temporary charges, no account


STAFF_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.POWER_COMPANY, Role.PROPERTY_OPERATOR})


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: int
    role: Role
    power_company_id: int | None = None
    property_company_id: int | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES


@dataclass(frozen=True, slots=True)
class Scope:
    """Where an object sits in the tenancy tree."""

    power_company_id: int
    property_company_id: int | None = None


def require_role(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        raise PermissionDenied("your role may not do this", role=actor.role.value)


def can_read(actor: Actor, scope: Scope) -> bool:
    if actor.role is Role.PLATFORM_ADMIN:
        return True
    if actor.role is Role.POWER_COMPANY:
        return actor.power_company_id == scope.power_company_id
    if actor.role is Role.PROPERTY_OPERATOR:
        return (
            scope.property_company_id is not None
            and actor.property_company_id == scope.property_company_id
        )
    return False


def can_manage(actor: Actor, scope: Scope) -> bool:
    """Changing things is for the platform admin and the owning property company only."""
    if actor.role is Role.PLATFORM_ADMIN:
        return True
    if actor.role is Role.PROPERTY_OPERATOR:
        return can_read(actor, scope)
    return False


def check_read(actor: Actor, scope: Scope, what: str = "object") -> None:
    if not can_read(actor, scope):
        raise NotFound(f"no such {what}")


def check_manage(actor: Actor, scope: Scope, what: str = "object") -> None:
    check_read(actor, scope, what)
    if not can_manage(actor, scope):
        raise PermissionDenied(f"your role may not change this {what}")
