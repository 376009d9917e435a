"""People and logins: operators, mini-program users, token revocation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from app.domain.access import Actor, Role, Scope, check_manage, require_role
from app.domain.accounts import mainland_mobile, validate_password, validate_phone
from app.domain.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from app.integrations.wechat import MiniProgramClient
from app.models import PowerCompany, PropertyCompany, RevokedToken, User
from app.models.base import utcnow
from app.services.context import hash_secret, login_lockout, settings, verify_secret
from app.services.uow import UnitOfWork

# A hash to compare against when the username is unknown, so both paths cost the same.
_DUMMY_HASH: dict[str, str] = {}


def create_staff_user(
    uow: UnitOfWork,
    actor: Actor,
    *,
    username: str,
    password: str,
    role: str,
    display_name: str = "",
    phone: str | None = None,
    power_company_id: int | None = None,
    property_company_id: int | None = None,
) -> User:
    """The platform admin creates any staff; a property operator adds colleagues."""
    role_ = Role(role)
    if role_ not in {Role.PLATFORM_ADMIN, Role.POWER_COMPANY, Role.PROPERTY_OPERATOR}:
        raise InvalidInput("staff users are platform_admin, power_company or property_operator")
    with uow:
        if actor.role is Role.PROPERTY_OPERATOR:
            if role_ is not Role.PROPERTY_OPERATOR:
                raise InvalidInput("operators add operators of their own company", field="role")
            property_company_id = actor.property_company_id
        else:
            require_role(actor, Role.PLATFORM_ADMIN)
        if role_ is Role.PROPERTY_OPERATOR:
            company = uow.session.get(PropertyCompany, property_company_id or 0)
            if company is None:
                raise InvalidInput("property_company_id is required", field="property_company_id")
            check_manage(actor, Scope(company.power_company_id, company.id), "property company")
            power_company_id = company.power_company_id
        elif role_ is Role.POWER_COMPANY:
            if uow.session.get(PowerCompany, power_company_id or 0) is None:
                raise InvalidInput("power_company_id is required", field="power_company_id")
            property_company_id = None
        else:
            power_company_id = property_company_id = None
        user = User(
            role=role_.value,
            username=username,
            password_hash=hash_secret(validate_password(password)),
            display_name=display_name,
            phone=validate_phone(phone) if phone else None,
            power_company_id=power_company_id,
            property_company_id=property_company_id,
        )
        uow.session.add(user)
        uow.commit_or_conflict("this username or phone is taken")
        return user


def password_login(uow: UnitOfWork, username: str, password: str) -> User:
    """Staff log in with username and password; repeated failures lock the user."""
    with uow:
        user = uow.session.execute(
            select(User).where(User.username == username)
        ).scalar_one_or_none()
        now = utcnow()
        if user is None or not user.is_active or user.password_hash is None:
            verify_secret(_dummy_hash(), password)
            raise AuthenticationFailed("wrong username or password")
        policy = login_lockout()
        policy.check_not_locked(user.locked_until, now)
        if not verify_secret(user.password_hash, password):
            user.failed_logins, user.locked_until = policy.after_failure(user.failed_logins, now)
            uow.commit()
            raise AuthenticationFailed("wrong username or password")
        user.failed_logins = 0
        user.locked_until = None
        uow.commit()
        return user


def _dummy_hash() -> str:
    method = settings().password_hash_method
    if method not in _DUMMY_HASH:
        _DUMMY_HASH[method] = hash_secret("not-a-password-0")
    return _DUMMY_HASH[method]


def wechat_login(uow: UnitOfWork, js_code: str) -> User:
    """Mini-program login: code2Session gives the openid; a new openid is a new resident."""
    s = settings()
    with uow:
        client = MiniProgramClient(s.wechat_appid, s.wechat_secret, s.wechat_api_base_url,
                                   uow.session)
        wx = client.code_to_session(js_code)
        user = uow.session.execute(
            select(User).where(User.openid == wx.openid)
        ).scalar_one_or_none()
        if user is None:
            user = User(role=Role.RESIDENT.value, openid=wx.openid, unionid=wx.unionid)
            uow.session.add(user)
        elif not user.is_active:
            raise AuthenticationFailed("this user is disabled")
        elif wx.unionid and not user.unionid:
            user.unionid = wx.unionid
        try:
            uow.commit()
        except IntegrityError:  # the same new user logging in twice at once
            uow.rollback()
            user = uow.session.execute(select(User).where(User.openid == wx.openid)).scalar_one()
        return user


def update_profile(uow: UnitOfWork, actor: Actor, *, display_name: str | None = None,
                   phone: str | None = None) -> User:
    with uow:
        user = uow.session.get(User, actor.user_id)
        if user is None:
            raise NotFound("no such user")
        if display_name is not None:
            user.display_name = display_name
        if phone is not None and validate_phone(phone) != user.phone:
            user.phone, user.phone_verified_at = phone, None  # typed: not vouched for
        uow.commit_or_conflict("this phone number belongs to another user")
        return user


RESIDENT_ROLES = (Role.RESIDENT.value, Role.VISITOR.value)


def bind_wechat_phone(uow: UnitOfWork, actor: Actor, code: str) -> User:
    """A ``getPhoneNumber`` button's code → the user's phone, verified by WeChat.

    The number must have been issued for our mini-program (the watermark's appid) and be a
    mainland mobile. A verified number wins over the same number merely *typed* by another
    resident (who may have mistyped, or squatted it): theirs is cleared. A number verified
    for, or given to, anyone else stays theirs (409)."""
    s = settings()
    with uow:
        user = uow.session.get(User, actor.user_id)
        if user is None:
            raise NotFound("no such user")
        if not user.openid:
            raise InvalidInput("log in with WeChat first")
        client = MiniProgramClient(s.wechat_appid, s.wechat_secret, s.wechat_api_base_url,
                                   uow.session)
        info = client.phone_number(code)
        uow.commit()  # keep the access_token the call may have fetched
        if info.watermark_appid != s.wechat_appid:
            raise InvalidInput("the phone number was issued for another mini-program",
                               field="code")
        phone = mainland_mobile(info.country_code, info.pure_phone_number)
        user = uow.session.get(User, actor.user_id)
        assert user is not None
        holder = uow.session.execute(
            select(User).where(User.phone == phone, User.id != user.id)
        ).scalar_one_or_none()
        if holder is not None:
            if holder.role not in RESIDENT_ROLES or holder.phone_verified_at is not None:
                raise Conflict("this phone number belongs to another user")
            holder.phone = None
            uow.session.flush()
        user.phone, user.phone_verified_at = phone, utcnow()
        uow.commit_or_conflict("this phone number belongs to another user")
        return user


def change_password(uow: UnitOfWork, actor: Actor, *, old_password: str, new_password: str
                    ) -> None:
    with uow:
        user = uow.session.get(User, actor.user_id)
        if user is None or not verify_secret(user.password_hash, old_password):
            raise AuthenticationFailed("the current password is wrong")
        user.password_hash = hash_secret(validate_password(new_password))
        uow.commit()


def active_user(uow: UnitOfWork, user_id: int) -> User | None:
    user = uow.session.get(User, user_id)
    return user if user is not None and user.is_active else None


def revoke_token(uow: UnitOfWork, *, jti: str, user_id: int | None, expires_at: datetime) -> None:
    """Remember a logged-out token until it would expire; survives restarts."""
    with uow:
        if uow.session.get(RevokedToken, jti) is None:
            uow.session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at,
                                         revoked_at=utcnow()))
        # Forget revocations of tokens that have expired anyway.
        uow.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
        try:
            uow.commit()
        except IntegrityError:
            uow.rollback()  # revoked concurrently: fine


def is_revoked(uow: UnitOfWork, jti: str) -> bool:
    return uow.session.get(RevokedToken, jti) is not None
