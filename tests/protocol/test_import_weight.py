"""The protocol and the simulator stay free of the platform's web stack.

A vendor's pile (or the simulator) imports ``app.protocol``; that must not pull
in Flask or SQLAlchemy through ``app/__init__.py`` (create_app imports them
lazily). Checked in a fresh interpreter, since this test process has both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import app.protocol
import simulator
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'sqlalchemy', 'flask_sqlalchemy',
                                                          'werkzeug', 'psycopg'})
print(json.dumps(heavy))
"""


def test_protocol_and_simulator_import_no_flask_or_sqlalchemy() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_create_app_is_still_importable_from_the_package() -> None:
    code = "from app import create_app; print(create_app.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "create_app"
