"""Errors raised by the provider-facing payment layer.

Every error carries a stable machine ``code`` so the HTTP layer can map it to a response
(and to the provider's expected reply) without parsing messages. Provider-side details
(``provider_code``, ``http_status``) are kept separate from our own code, because a
provider's error vocabulary is theirs and changes without notice.
"""

from __future__ import annotations


class PaymentError(Exception):
    """Base class: ``code`` is ours and stable; the message is for logs only."""

    code = "payment_error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        provider_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message or self.__class__.code)
        if code is not None:
            self.code = code
        self.message = message or self.code
        self.provider_code = provider_code
        self.http_status = http_status

    def __repr__(self) -> str:
        extra = f", provider_code={self.provider_code!r}" if self.provider_code else ""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}{extra})"


class SignatureInvalid(PaymentError):
    """A signature did not verify, used an algorithm we refuse, or named an unknown key."""

    code = "signature_invalid"


class StaleNotification(PaymentError):
    """A signed message's timestamp is 5 minutes or more away from our clock (replay guard)."""

    code = "stale_notification"


class NotificationMalformed(PaymentError):
    """A (possibly signed) message could not be parsed, decrypted or understood."""

    code = "notification_malformed"


class ProviderMismatch(PaymentError):
    """Validly signed, but for another appid / mchid / seller: never credit it."""

    code = "provider_mismatch"


class ProviderUnavailable(PaymentError):
    """Network failure, timeout, 5xx or rate limit: the outcome is unknown, retry later."""

    code = "provider_unavailable"


class ProviderRejected(PaymentError):
    """The provider answered and refused (4xx / business error); see ``provider_code``."""

    code = "provider_rejected"
