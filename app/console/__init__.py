"""The browser console for the platform admin, the power company and property operators.

A small front end (plain ES modules, no build step, nothing fetched from a CDN) over the
same JSON API the mini-program uses: every rule about who may see or change what is the
API's, and the console holds no business logic of its own. This blueprint only serves the
shell page and the static files.
"""

from __future__ import annotations

from flask import Blueprint, Flask, make_response, redirect, render_template, url_for
from werkzeug.wrappers import Response

bp = Blueprint("console", __name__, url_prefix="/console", static_folder="static",
               template_folder="templates")


# The console runs only its own scripts: no inline script, nothing from elsewhere, not
# framed. Images may be blob: URLs (QR codes fetched with the user's token).
CSP = ("default-src 'self'; script-src 'self'; connect-src 'self'; "
       "img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@bp.get("/")
def shell() -> Response:
    """One page; the hash part of the URL (``#/live``, ``#/piles/3``) picks the view."""
    response = make_response(render_template("console/index.html"))
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def register_console(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.get("/")
    def _home() -> Response:
        return redirect(url_for("console.shell"))
