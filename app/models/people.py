"""Users, charging accounts, IC cards, and what authentication must remember."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.domain.access import Role
from app.extensions import db
from app.models.base import CreatedMixin, IdMixin, UTCDateTime
from app.models.org import Community

ROLES = tuple(r.value for r in Role)


class User(IdMixin, CreatedMixin, db.Model):
    """A person: a resident or visitor from the mini-program, or an operator/admin."""

    __tablename__ = "users"
    role: Mapped[str] = mapped_column(String(20))
    username: Mapped[str | None] = mapped_column(String(50), unique=True)
    phone: Mapped[str | None] = mapped_column(String(11), unique=True)
    # Set when WeChat vouched for ``phone`` (getPhoneNumber); a typed number leaves it None.
    phone_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    openid: Mapped[str | None] = mapped_column(String(64), unique=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    display_name: Mapped[str] = mapped_column(String(50), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    power_company_id: Mapped[int | None] = mapped_column(ForeignKey("power_companies.id"))
    property_company_id: Mapped[int | None] = mapped_column(
        ForeignKey("property_companies.id"), index=True
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")", name="role"),
        CheckConstraint(
            "role != 'property_operator' OR property_company_id IS NOT NULL",
            name="operator_has_company",
        ),
        CheckConstraint(
            "role != 'power_company' OR power_company_id IS NOT NULL",
            name="power_user_has_company",
        ),
    )


SUBSCRIPTION_KINDS = ("charge_finished", "alarm")


class WeChatSubscription(IdMixin, CreatedMixin, db.Model):
    """One accepted WeChat subscribe message (订阅消息): a mini-program user tapped *allow*
    for ``template_id`` in ``wx.requestSubscribeMessage``, which lets the server send that
    template to them ONCE. Used up (``used_at``) by the notification that spends it."""

    __tablename__ = "wechat_subscriptions"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    template_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_for: Mapped[str | None] = mapped_column(String(100))  # e.g. "incident:12"
    __table_args__ = (
        CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in SUBSCRIPTION_KINDS) + ")",
                        name="kind"),
        CheckConstraint("used_at IS NOT NULL OR used_for IS NULL", name="used"),
        Index("ix_wechat_subscriptions_user_template", "user_id", "template_id", "used_at"),
    )


class ChargingAccount(IdMixin, CreatedMixin, db.Model):
    """What a pile's keypad logs in to: a phone number + PIN within one community.

    Its money lives in two ledger accounts: the wallet (available) and the hold
    (frozen for charges in progress).
    """

    __tablename__ = "charging_accounts"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    account_no: Mapped[str | None] = mapped_column(String(11))  # None: a visitor's order
    holder_name: Mapped[str] = mapped_column(String(50), default="")
    kind: Mapped[str] = mapped_column(String(10), default="resident")
    status: Mapped[str] = mapped_column(String(10), default="active")
    pin_hash: Mapped[str] = mapped_column(String(255))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    pin_locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    wallet_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), unique=True)
    hold_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), unique=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    community: Mapped[Community] = relationship()
    cards: Mapped[list[ICCard]] = relationship(back_populates="account")
    __table_args__ = (
        CheckConstraint("kind IN ('resident', 'temporary')", name="kind"),
        CheckConstraint("status IN ('active', 'blocked', 'closed')", name="status"),
        CheckConstraint("kind = 'temporary' OR account_no IS NOT NULL", name="number"),
        # One open account per phone number per community; closed ones free the number.
        Index(
            "uq_charging_accounts_open_number",
            "community_id",
            "account_no",
            unique=True,
            sqlite_where=text("status != 'closed'"),
            postgresql_where=text("status != 'closed'"),
        ),
    )


class AccountBinding(IdMixin, CreatedMixin, db.Model):
    """A user's link to a charging account (one user binds several; family may share)."""

    __tablename__ = "account_bindings"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    charging_account_id: Mapped[int] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    __table_args__ = (UniqueConstraint("user_id", "charging_account_id"),)


class ICCard(IdMixin, CreatedMixin, db.Model):
    __tablename__ = "ic_cards"
    card_uid: Mapped[str] = mapped_column(String(32), unique=True)
    charging_account_id: Mapped[int] = mapped_column(
        ForeignKey("charging_accounts.id"), index=True
    )
    status: Mapped[str] = mapped_column(String(10), default="active")
    account: Mapped[ChargingAccount] = relationship(back_populates="cards")
    __table_args__ = (CheckConstraint("status IN ('active', 'blocked')", name="status"),)


class RevokedToken(db.Model):
    """A JWT that was logged out or rotated; kept until it would have expired anyway."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SharedToken(db.Model):
    """Provider tokens (e.g. WeChat access_token) shared by every worker process."""

    __tablename__ = "shared_tokens"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(IdMixin, CreatedMixin, db.Model):
    """Who did what to which object, for operator actions that matter later."""

    __tablename__ = "audit_log"
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(50))
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)
