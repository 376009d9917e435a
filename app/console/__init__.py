"""The browser console for the platform admin, the power company and property operators.

A small front end (plain ES modules, no build step, nothing fetched from a CDN) over the
same JSON API the mini-program uses: every rule about who may see or change what is the
API's, and the console holds no business logic of its own. This blueprint only serves the
shell page and the static files.
"""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, render_template, url_for
from werkzeug.wrappers import Response

bp = Blueprint("console", __name__, url_prefix="/console", static_folder="static",
               template_folder="templates")


@bp.get("/")
def shell() -> str:
    """One page; the hash part of the URL (``#/live``, ``#/piles/3``) picks the view."""
    return render_template("console/index.html")


def register_console(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.get("/")
    def _home() -> Response:
        return redirect(url_for("console.shell"))
