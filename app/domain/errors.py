"""One error hierarchy for the whole platform.

Domain and service code raise these; the HTTP layer maps them to the JSON
error body in one place (``app/api/errors.py``) and the MQTT bridge maps them
to a nack reason. ``code`` is the stable machine-readable name clients switch on.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.details = details
        super().__init__(self.message)


class ConfigurationError(DomainError):
    """The platform is configured wrongly and refuses to start."""

    code = "configuration_error"


class InvalidInput(DomainError):
    """The request is well-formed but its values break a rule."""

    code = "invalid_input"


class NotFound(DomainError):
    """No such object, or not one the caller may see."""

    code = "not_found"


class AuthenticationFailed(DomainError):
    """Credentials are missing, wrong or expired."""

    code = "unauthenticated"


class PermissionDenied(DomainError):
    """The caller's role may not do this."""

    code = "forbidden"


class Conflict(DomainError):
    """The object's current state does not allow this."""

    code = "conflict"


class UpstreamUnavailable(DomainError):
    """A service the platform depends on (e.g. WeChat's API) did not answer usefully."""

    code = "upstream_unavailable"


class AccountLocked(DomainError):
    """Too many wrong passwords; the account is locked for a while."""

    code = "account_locked"


class InsufficientFunds(Conflict):
    """The available balance does not cover this."""

    code = "insufficient_funds"


class IdempotencyConflict(Conflict):
    """The idempotency key was already used for a different operation."""

    code = "idempotency_conflict"


class LedgerInvariantViolated(DomainError):
    """A posting would break double-entry bookkeeping: a programming error."""

    code = "ledger_invariant"
