"""Command-line entry points: ``flask --app wsgi <command>``."""

from __future__ import annotations

import click
from flask import Flask

from app.services import demo


def register_cli(app: Flask) -> None:
    @app.cli.command("seed-demo")
    @click.option("--piles-per-community", default=2, show_default=True)
    @click.option("--ports-per-pile", default=10, show_default=True)
    def seed_demo(piles_per_community: int, ports_per_pile: int) -> None:
        """Create demo companies, communities, piles, users, accounts and tariffs."""
        summary = demo.seed(piles_per_community=piles_per_community,
                            ports_per_pile=ports_per_pile)
        for line in summary.lines():
            click.echo(line)

    @app.cli.group("bridge")
    def bridge() -> None:
        """The MQTT bridge between piles and the platform."""

    @bridge.command("run")
    @click.option("--worker", default="1", show_default=True,
                  help="this worker's name; run several with different names to share load")
    @click.option("--batch-max", default=1000, show_default=True)
    def bridge_run(worker: str, batch_max: int) -> None:
        """Run one bridge worker until interrupted."""
        from app.mqtt_bridge.worker import BridgeWorker

        BridgeWorker(app, worker=worker, batch_max=batch_max).run_forever()

    @app.cli.command("create-admin")
    @click.argument("username")
    @click.password_option()
    def create_admin(username: str, password: str) -> None:
        """Create a platform admin (the first user of a new installation)."""
        user = demo.create_platform_admin(username, password)
        click.echo(f"platform admin {user.username} created (id {user.id})")
