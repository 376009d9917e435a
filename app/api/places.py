"""Power and property companies, communities, buildings, piles and ports."""

from __future__ import annotations

import io
from typing import Any

import qrcode
import qrcode.image.pure
import qrcode.image.svg
from flask import Response
from flask.views import MethodView
from marshmallow import Schema, fields, pre_dump, validate
from sqlalchemy import select

from app.api.schemas import Blueprint, Id, ListArgs, Name, StrictSchema
from app.api.security import BEARER, MANAGERS, STAFF, current_actor, requires
from app.domain.access import Role
from app.models import Building, Pile, Port, PowerCompany, PropertyCompany
from app.services import access, places
from app.services.places import port_qr_payload
from app.services.uow import UnitOfWork

blp = Blueprint("places", __name__, url_prefix="/api/v1", description="Tenancy and places")

LAT = validate.Range(min=-90, max=90)
LNG = validate.Range(min=-180, max=180)
SERIAL = validate.Regexp(r"^[A-Za-z0-9_-]{1,32}$", error="letters, digits, _ and - only")


class PowerCompanySchema(Schema):
    id = fields.Integer(dump_only=True)
    name = Name(required=True)
    grid_price_fen_per_kwh = fields.Integer(strict=True, validate=validate.Range(min=0, max=10000))


class PowerCompanyArgs(PowerCompanySchema, StrictSchema):
    pass


class PropertyCompanySchema(Schema):
    id = fields.Integer()
    power_company_id = fields.Integer()
    name = fields.String()
    contact_phone = fields.String(allow_none=True)


class PropertyCompanyArgs(StrictSchema):
    power_company_id = Id(required=True)
    name = Name(required=True)
    contact_phone = fields.String(validate=validate.Length(max=20), load_default=None)


class PropertyCompanyPatch(StrictSchema):
    name = Name()
    contact_phone = fields.String(validate=validate.Length(max=20), allow_none=True)


class CommunitySchema(Schema):
    id = fields.Integer()
    property_company_id = fields.Integer()
    name = fields.String()
    address = fields.String()
    lat = fields.Float(allow_none=True)
    lng = fields.Float(allow_none=True)
    timezone = fields.String()
    master_meter_serial = fields.String(allow_none=True)
    min_start_balance_fen = fields.Integer()


class CommunityPatch(StrictSchema):
    name = Name()
    address = fields.String(validate=validate.Length(max=200))
    lat = fields.Float(validate=LAT, allow_none=True)
    lng = fields.Float(validate=LNG, allow_none=True)
    master_meter_serial = fields.String(validate=SERIAL, allow_none=True)
    min_start_balance_fen = fields.Integer(strict=True, validate=validate.Range(min=0, max=100000))


class CommunityArgs(CommunityPatch):
    property_company_id = Id(required=True)
    name = Name(required=True)


class CommunityListArgs(ListArgs):
    property_company_id = Id(strict=False)


class BuildingSchema(Schema):
    id = fields.Integer()
    community_id = fields.Integer()
    name = fields.String()
    kind = fields.String()


class BuildingPatch(StrictSchema):
    name = Name()
    kind = fields.String(validate=validate.OneOf(["building", "shed"]))


class BuildingArgs(BuildingPatch):
    name = Name(required=True)
    kind = fields.String(validate=validate.OneOf(["building", "shed"]), load_default="shed")


class PortSchema(Schema):
    id = fields.Integer()
    pile_id = fields.Integer()
    number = fields.Integer()
    public_code = fields.String()
    status = fields.String()
    status_changed_at = fields.DateTime(allow_none=True)
    power_w = fields.Integer(allow_none=True)  # the last meter reading's power
    qr_payload = fields.Function(port_qr_payload)


class PileSchema(Schema):
    id = fields.Integer()
    community_id = fields.Integer()
    building_id = fields.Integer(allow_none=True)
    serial = fields.String()
    model = fields.String()
    port_count = fields.Integer()
    lat = fields.Float(allow_none=True)
    lng = fields.Float(allow_none=True)
    enabled = fields.Boolean()
    online = fields.Boolean()
    last_seen_at = fields.DateTime(allow_none=True)
    firmware = fields.String(allow_none=True)
    ports = fields.List(fields.Nested(PortSchema))


class RegisteredPileSchema(PileSchema):
    """A ``places.RegisteredPile``: the pile, with the MQTT credentials shown only here."""

    mqtt_username = fields.String()
    mqtt_password = fields.String()

    @pre_dump
    def _with_credentials(self, registered: places.RegisteredPile, **_kw: Any
                          ) -> dict[str, Any]:
        # The pile's attributes as they are: its ports stay objects for PortSchema (dumping
        # an already dumped pile would hand qr_payload a dict).
        pile = registered.pile
        out = {name: getattr(pile, name) for name in PileSchema._declared_fields}
        out.update(mqtt_username=pile.serial, mqtt_password=registered.mqtt_password)
        return out


class PilePatch(StrictSchema):
    building_id = Id(allow_none=True)
    model = fields.String(validate=validate.Length(max=60))
    lat = fields.Float(validate=LAT, allow_none=True)
    lng = fields.Float(validate=LNG, allow_none=True)
    enabled = fields.Boolean()


class PileArgs(PilePatch):
    community_id = Id(required=True)
    serial = fields.String(required=True, validate=SERIAL)
    port_count = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=64))


class PileListArgs(ListArgs):
    community_id = Id(strict=False)


class PublicTariffSchema(Schema):
    """A community's tariff in force: public prices (the rules as stored, see
    ``app.domain.tariff``; money in integer fen)."""

    version = fields.Integer()
    effective_from = fields.DateTime()
    rules = fields.Dict()


class PublicPortSchema(Schema):
    """What anyone scanning a QR code may see."""

    port_id = fields.Integer(attribute="port.id")
    public_code = fields.String(attribute="port.public_code")
    number = fields.Integer(attribute="port.number")
    status = fields.String(attribute="port.status")
    pile_serial = fields.String(attribute="port.pile.serial")
    pile_online = fields.Boolean(attribute="port.pile.online")
    community_id = fields.Integer(attribute="port.pile.community_id")
    community_name = fields.String(attribute="port.pile.community.name")
    building_name = fields.String(attribute="port.pile.building.name", allow_none=True)
    tariff = fields.Nested(PublicTariffSchema, allow_none=True,
                           metadata={"description": "in force now; null if none is set"})


class NearbyArgs(StrictSchema):
    lat = fields.Float(required=True, validate=LAT, metadata={"description": "WGS-84"})
    lng = fields.Float(required=True, validate=LNG, metadata={"description": "WGS-84"})
    limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=50))


class NearbyCommunitySchema(Schema):
    id = fields.Integer()
    name = fields.String()
    address = fields.String()
    lat = fields.Float()
    lng = fields.Float()
    distance_m = fields.Integer(metadata={"description": "great-circle distance, metres"})
    pile_count = fields.Integer(metadata={"description": "piles in service"})
    piles_online = fields.Integer()
    port_count = fields.Integer(metadata={"description": "ports of the piles in service"})
    free_ports = fields.Integer(metadata={"description": "idle ports of online piles"})


# --- companies ------------------------------------------------------------------------


@blp.route("/power-companies")
class PowerCompanies(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, PowerCompanySchema(many=True))
    @requires(Role.PLATFORM_ADMIN, Role.POWER_COMPANY)
    def get(self) -> list[PowerCompany]:
        actor = current_actor()
        stmt = select(PowerCompany).order_by(PowerCompany.id)
        if actor.role is Role.POWER_COMPANY:
            stmt = stmt.where(PowerCompany.id == actor.power_company_id)
        return list(UnitOfWork().session.execute(stmt).scalars())

    @blp.doc(security=BEARER)
    @blp.arguments(PowerCompanyArgs)
    @blp.response(201, PowerCompanySchema)
    @requires(Role.PLATFORM_ADMIN)
    def post(self, args: dict[str, Any]) -> PowerCompany:
        return places.create_power_company(UnitOfWork(), current_actor(), **args)


@blp.route("/property-companies")
class PropertyCompanies(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, PropertyCompanySchema(many=True))
    @requires(*STAFF)
    def get(self, args: dict[str, Any]) -> list[PropertyCompany]:
        actor = current_actor()
        stmt = select(PropertyCompany).order_by(PropertyCompany.id)
        if actor.role is Role.POWER_COMPANY:
            stmt = stmt.where(PropertyCompany.power_company_id == actor.power_company_id)
        elif actor.role is Role.PROPERTY_OPERATOR:
            stmt = stmt.where(PropertyCompany.id == actor.property_company_id)
        stmt = stmt.limit(args["limit"]).offset(args["offset"])
        return list(UnitOfWork().session.execute(stmt).scalars())

    @blp.doc(security=BEARER)
    @blp.arguments(PropertyCompanyArgs)
    @blp.response(201, PropertyCompanySchema)
    @requires(Role.PLATFORM_ADMIN)
    def post(self, args: dict[str, Any]) -> PropertyCompany:
        return places.create_property_company(UnitOfWork(), current_actor(), **args)


@blp.route("/property-companies/<int:company_id>")
class PropertyCompanyItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, PropertyCompanySchema)
    @requires(*STAFF)
    def get(self, company_id: int) -> PropertyCompany:
        return access.get_property_company(UnitOfWork().session, current_actor(), company_id)

    @blp.doc(security=BEARER)
    @blp.arguments(PropertyCompanyPatch)
    @blp.response(200, PropertyCompanySchema)
    @requires(*MANAGERS)
    def patch(self, args: dict[str, Any], company_id: int) -> PropertyCompany:
        return places.update_property_company(UnitOfWork(), current_actor(), company_id, args)


# --- communities and buildings --------------------------------------------------------


@blp.route("/communities")
class Communities(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(CommunityListArgs, location="query")
    @blp.response(200, CommunitySchema(many=True))
    @requires(*STAFF)
    def get(self, args: dict[str, Any]) -> list[Any]:
        stmt = access.scoped_communities(current_actor())
        if "property_company_id" in args:
            stmt = stmt.where(PropertyCompany.id == args["property_company_id"])
        stmt = stmt.order_by("id").limit(args["limit"]).offset(args["offset"])
        return list(UnitOfWork().session.execute(stmt).scalars())

    @blp.doc(security=BEARER)
    @blp.arguments(CommunityArgs)
    @blp.response(201, CommunitySchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any]) -> Any:
        return places.create_community(UnitOfWork(), current_actor(), **args)


@blp.route("/communities/<int:community_id>")
class CommunityItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, CommunitySchema)
    @requires(*STAFF)
    def get(self, community_id: int) -> Any:
        return access.get_community(UnitOfWork().session, current_actor(), community_id)

    @blp.doc(security=BEARER)
    @blp.arguments(CommunityPatch)
    @blp.response(200, CommunitySchema)
    @requires(*MANAGERS)
    def patch(self, args: dict[str, Any], community_id: int) -> Any:
        return places.update_community(UnitOfWork(), current_actor(), community_id, args)


@blp.route("/communities/<int:community_id>/buildings")
class CommunityBuildings(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, BuildingSchema(many=True))
    @requires(*STAFF)
    def get(self, community_id: int) -> list[Building]:
        uow = UnitOfWork()
        access.get_community(uow.session, current_actor(), community_id)
        stmt = select(Building).where(Building.community_id == community_id).order_by(Building.id)
        return list(uow.session.execute(stmt).scalars())

    @blp.doc(security=BEARER)
    @blp.arguments(BuildingArgs)
    @blp.response(201, BuildingSchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any], community_id: int) -> Building:
        return places.create_building(UnitOfWork(), current_actor(), community_id=community_id,
                                      **args)


@blp.route("/buildings/<int:building_id>")
class BuildingItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, BuildingSchema)
    @requires(*STAFF)
    def get(self, building_id: int) -> Building:
        return access.get_building(UnitOfWork().session, current_actor(), building_id)

    @blp.doc(security=BEARER)
    @blp.arguments(BuildingPatch)
    @blp.response(200, BuildingSchema)
    @requires(*MANAGERS)
    def patch(self, args: dict[str, Any], building_id: int) -> Building:
        return places.update_building(UnitOfWork(), current_actor(), building_id, args)

    @blp.doc(security=BEARER)
    @blp.response(204)
    @requires(*MANAGERS)
    def delete(self, building_id: int) -> None:
        places.delete_building(UnitOfWork(), current_actor(), building_id)


# --- piles and ports ------------------------------------------------------------------


@blp.route("/piles")
class Piles(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(PileListArgs, location="query")
    @blp.response(200, PileSchema(many=True))
    @requires(*STAFF)
    def get(self, args: dict[str, Any]) -> list[Pile]:
        actor = current_actor()
        stmt = select(Pile).where(Pile.community_id.in_(access.scoped_community_ids(actor)))
        if "community_id" in args:
            stmt = stmt.where(Pile.community_id == args["community_id"])
        stmt = stmt.order_by(Pile.id).limit(args["limit"]).offset(args["offset"])
        return list(UnitOfWork().session.execute(stmt).scalars())

    @blp.doc(security=BEARER)
    @blp.arguments(PileArgs)
    @blp.response(201, RegisteredPileSchema)
    @requires(*MANAGERS)
    def post(self, args: dict[str, Any]) -> places.RegisteredPile:
        """Register a pile; the MQTT password is shown in this response only."""
        return places.register_pile(UnitOfWork(), current_actor(), **args)


@blp.route("/piles/<int:pile_id>")
class PileItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, PileSchema)
    @requires(*STAFF)
    def get(self, pile_id: int) -> Pile:
        return access.get_pile(UnitOfWork().session, current_actor(), pile_id)

    @blp.doc(security=BEARER)
    @blp.arguments(PilePatch)
    @blp.response(200, PileSchema)
    @requires(*MANAGERS)
    def patch(self, args: dict[str, Any], pile_id: int) -> Pile:
        return places.update_pile(UnitOfWork(), current_actor(), pile_id, args)


@blp.route("/ports/<int:port_id>")
@blp.doc(security=BEARER)
@blp.response(200, PortSchema)
@requires(*STAFF)
def get_port(port_id: int) -> Port:
    return access.get_port(UnitOfWork().session, current_actor(), port_id)


def _port_qr(port_id: int, image_factory: Any) -> bytes:
    port = access.get_port(UnitOfWork().session, current_actor(), port_id)
    out = io.BytesIO()
    qrcode.make(port_qr_payload(port), image_factory=image_factory).save(out)
    return out.getvalue()


@blp.route("/ports/<int:port_id>/qr.svg")
@blp.doc(security=BEARER, responses={200: {"content": {"image/svg+xml": {}}}})
@requires(*STAFF)
def port_qr_svg(port_id: int) -> Response:
    """The port's QR code as SVG, for printing the sticker."""
    return Response(_port_qr(port_id, qrcode.image.svg.SvgPathImage), mimetype="image/svg+xml")


@blp.route("/ports/<int:port_id>/qr.png")
@blp.doc(security=BEARER, responses={200: {"content": {"image/png": {}}}})
@requires(*STAFF)
def port_qr_png(port_id: int) -> Response:
    """The port's QR code as PNG, for label printers that do not take SVG."""
    return Response(_port_qr(port_id, qrcode.image.pure.PyPNGImage), mimetype="image/png")


@blp.route("/public/ports/<string:code>")
@blp.response(200, PublicPortSchema)
def public_port(code: str) -> places.PublicPort:
    """What scanning a port's QR code shows, before logging in (with the tariff in force)."""
    return places.public_port(UnitOfWork(), code)


@blp.route("/public/communities")
@blp.arguments(NearbyArgs, location="query")
@blp.response(200, NearbyCommunitySchema(many=True))
def nearby_communities(args: dict[str, Any]) -> list[places.NearbyCommunity]:
    """The charging communities nearest to a point, nearest first, with free ports (no
    log-in: the mini-program's home page). Communities without coordinates are not listed."""
    return places.nearby_communities(UnitOfWork(), args["lat"], args["lng"], args["limit"])


__all__ = ["blp"]
