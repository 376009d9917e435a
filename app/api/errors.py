"""The one place errors become HTTP responses: ``{"code", "message", "details"}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from flask_jwt_extended.exceptions import (
    JWTExtendedException,
    NoAuthorizationError,
    RevokedTokenError,
    UserLookupError,
    WrongTokenError,
)
from jwt.exceptions import ExpiredSignatureError, PyJWTError
from werkzeug.exceptions import HTTPException

from app.domain import errors as domain

log = logging.getLogger(__name__)

# Ordered: the first matching class decides (subclasses before their bases).
DOMAIN_STATUS: list[tuple[type[domain.DomainError], int]] = [
    (domain.InsufficientFunds, 409),
    (domain.IdempotencyConflict, 409),
    (domain.Conflict, 409),
    (domain.InvalidInput, 422),
    (domain.NotFound, 404),
    (domain.AuthenticationFailed, 401),
    (domain.PermissionDenied, 403),
    (domain.AccountLocked, 423),
    (domain.ConfigurationError, 503),
    (domain.UpstreamUnavailable, 503),
]


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> tuple[Response, int]:
    return jsonify({"code": code, "message": message, "details": details or {}}), status


def status_for(exc: domain.DomainError) -> int:
    for cls, status in DOMAIN_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(domain.DomainError)
    def _domain(exc: domain.DomainError) -> tuple[Response, int]:
        status = status_for(exc)
        if status >= 500:
            log.error("domain error %s: %s", exc.code, exc.message)
        return error_response(status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        messages = data.get("messages")
        if messages is not None:  # webargs/marshmallow validation
            if status == 422:
                return error_response(422, "validation_error", "the request is invalid",
                                      {"fields": messages})
            return error_response(status, "bad_request", "the request body is not valid JSON",
                                  {"fields": messages})
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, code, exc.description or exc.name or "error")

    @app.errorhandler(ExpiredSignatureError)
    def _expired(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "token_expired", "the token has expired; refresh or log in")

    @app.errorhandler(RevokedTokenError)
    def _revoked(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "token_revoked", "the token was revoked; log in again")

    @app.errorhandler(NoAuthorizationError)
    def _missing(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "unauthenticated", "log in first (Authorization: Bearer …)")

    @app.errorhandler(UserLookupError)
    def _user_gone(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "unauthenticated", "this user no longer exists or is disabled")

    @app.errorhandler(WrongTokenError)
    def _wrong(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "invalid_token", str(exc))

    @app.errorhandler(JWTExtendedException)
    def _jwt(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "invalid_token", "the token is not valid")

    @app.errorhandler(PyJWTError)
    def _pyjwt(exc: Exception) -> tuple[Response, int]:
        return error_response(401, "invalid_token", "the token is not valid")

    # flask-jwt-extended registered its own handlers ({"message"}, 422) for many token
    # errors (bad signature, disallowed alg, malformed header...). Flask prefers the most
    # specific class, so they would beat the two generic handlers above: take them over.
    ours = {ExpiredSignatureError, RevokedTokenError, NoAuthorizationError, UserLookupError,
            WrongTokenError, JWTExtendedException, PyJWTError}
    for cls in list(app.error_handler_spec[None][None]):
        if issubclass(cls, (JWTExtendedException, PyJWTError)) and cls not in ours:
            app.register_error_handler(cls, _jwt)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "something went wrong on our side")
