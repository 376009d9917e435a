"""What a phone camera opens from a port's QR code (``/q/<code>``).

The QR payload is a URL so that WeChat can open the mini-program on that port (a
"scan ordinary QR code" rule on the URL prefix); any other scanner lands here and sees
which port it is, whether it is free, the prices, and that charging starts in WeChat.
"""

from __future__ import annotations

from flask import Blueprint, Flask, render_template

from app.domain.errors import NotFound
from app.domain.tariff import Tariff, TariffError, describe
from app.services import places
from app.services.uow import UnitOfWork

bp = Blueprint("landing", __name__, template_folder="templates")

STATUS_WORDS = {"idle": "空闲，可以充电", "plugged": "已插枪", "charging": "充电中",
                "full": "已充满", "fault": "故障，暂停使用", "offline": "离线"}


@bp.get("/q/<string:code>")
def port_landing(code: str) -> tuple[str, int] | str:
    try:
        found = places.public_port(UnitOfWork(), code)
    except NotFound:
        return render_template("landing/port.html", port=None), 404
    port = found.port
    prices: list[str] = []
    if found.tariff is not None:
        try:
            prices = describe(Tariff.from_dict(found.tariff.rules))
        except TariffError:
            prices = []
    status = port.status if port.pile.online else "offline"
    return render_template(
        "landing/port.html", port=port, community=port.pile.community.name,
        building=port.pile.building.name if port.pile.building else None,
        status=status, status_words=STATUS_WORDS.get(status, status), prices=prices)


def register_landing(app: Flask) -> None:
    app.register_blueprint(bp)
