"""Command-line entry points: ``flask --app wsgi <command>``."""

from __future__ import annotations

import contextlib

import click
from flask import Flask

from app.services import demo


def register_cli(app: Flask) -> None:
    @app.cli.command("seed-demo")
    @click.option("--piles-per-community", default=2, show_default=True)
    @click.option("--ports-per-pile", default=10, show_default=True)
    @click.option("--history-days", default=demo.HISTORY_DAYS, show_default=True,
                  type=click.IntRange(0, 92),
                  help="complete days of meter history for the loss page (0: none)")
    def seed_demo(piles_per_community: int, ports_per_pile: int, history_days: int) -> None:
        """Create demo companies, communities, piles, users, accounts and tariffs, and a
        meter history (master meters and sockets) for the theft and loss page."""
        summary = demo.seed(piles_per_community=piles_per_community,
                            ports_per_pile=ports_per_pile, history_days=history_days)
        for line in summary.lines():
            click.echo(line)

    @app.cli.group("bridge")
    def bridge() -> None:
        """The MQTT bridge between piles and the platform."""

    @bridge.command("run")
    @click.option("--worker", default="1", show_default=True,
                  help="this worker's name; run several with different names to share load")
    @click.option("--group", default="bridge", show_default=True,
                  help="the shared-subscription group all workers of one deployment share")
    @click.option("--batch-max", default=1000, show_default=True)
    @click.option("--link", type=click.Choice(["process", "thread"]), default="process",
                  show_default=True,
                  help="run the MQTT client in a child process (two cores: paho beside the "
                       "ingest) or on a thread of this one")
    @click.option("--lanes", type=click.IntRange(1, 16), default=None,
                  help="ingest lanes (threads with a database connection each; a pile "
                       "always uses the same one) [default: 2 on PostgreSQL, 1 on SQLite]")
    def bridge_run(worker: str, group: str, batch_max: int, link: str,
                   lanes: int | None) -> None:
        """Run one bridge worker until interrupted."""
        from app.mqtt_bridge.worker import BridgeWorker

        if lanes is None:
            lanes = 2 if app.config["SETTINGS"].database_url.startswith("postgresql") else 1
        BridgeWorker(app, worker=worker, group=group, batch_max=batch_max,
                     link=link, lanes=lanes).run_forever()  # type: ignore[arg-type]

    @bridge.command("forget-session")
    @click.option("--worker", default="1", show_default=True)
    def bridge_forget(worker: str) -> None:
        """Delete a retired worker's persistent session on the broker.

        A worker that is gone for good still holds its share of the shared
        subscription until its session expires; this hands that share back now.
        """
        from app.mqtt_bridge.worker import forget_session

        forget_session(app, worker)
        click.echo(f"session of bridge worker {worker} removed")

    @app.cli.group("broker")
    def broker() -> None:
        """Broker credentials: Mosquitto password file and ACL (docs/broker.md)."""

    @broker.command("write-auth")
    @click.option("--dir", "directory", required=True,
                  type=click.Path(file_okay=False, writable=True),
                  help="where to write passwd and acl (Mosquitto's password_file/acl_file)")
    @click.option("--platform-user", default=None,
                  help="the platform account [default: MQTT_USERNAME or evc-platform]")
    @click.option("--extra-users-file", type=click.Path(exists=True, dir_okay=False),
                  default=None,
                  help="more platform accounts, one 'name:password' per line "
                       "(each bridge worker and the web process needs its own)")
    @click.option("--reload-pid-file", type=click.Path(dir_okay=False), default=None,
                  help="then send SIGHUP to the Mosquitto whose pid is in this file")
    def broker_write_auth(directory: str, platform_user: str | None,
                          extra_users_file: str | None, reload_pid_file: str | None) -> None:
        """Write the password file (every enabled pile + platform accounts) and the ACL.

        Pile passwords are derived from SECRET_KEY; the platform account's
        password is MQTT_PASSWORD (or MQTT_PASSWORD_FILE).
        """
        import os
        import signal
        from pathlib import Path

        from app.extensions import db
        from app.services import broker_auth
        from app.services.context import settings

        s = settings()
        user = platform_user or s.mqtt_username or broker_auth.TEMPLATE_PLATFORM_USER
        if not s.mqtt_password:
            raise click.ClickException(
                "set MQTT_PASSWORD (or MQTT_PASSWORD_FILE): the platform account's password")
        extra: dict[str, str] = {}
        if extra_users_file:
            for line in Path(extra_users_file).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    name, sep, password = line.partition(":")
                    if not sep or not name or not password:
                        raise click.ClickException(
                            f"{extra_users_file}: expected 'name:password', got {line!r}")
                    extra[name.strip()] = password.strip()
        try:
            written = broker_auth.write_broker_files(
                db.session, directory, user, s.mqtt_password, extra_platform_users=extra)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            db.session.rollback()
        click.echo(f"wrote {written.password_file} ({written.piles} piles, platform accounts: "
                   f"{', '.join(written.platform_users)}) and {written.acl_file}")
        if reload_pid_file:
            pid = int(Path(reload_pid_file).read_text().strip())
            os.kill(pid, signal.SIGHUP)
            click.echo(f"sent SIGHUP to mosquitto (pid {pid})")
        else:
            click.echo("now reload Mosquitto: kill -HUP <pid> (or systemctl reload mosquitto)")

    @broker.command("pile-password")
    @click.argument("serial")
    def broker_pile_password(serial: str) -> None:
        """Print the MQTT password of a registered pile (for its installer)."""
        from sqlalchemy import select

        from app.extensions import db
        from app.models import Pile
        from app.services.broker_auth import pile_mqtt_password
        from app.services.context import settings

        if db.session.execute(select(Pile.id).where(Pile.serial == serial)).first() is None:
            raise click.ClickException(f"no pile with serial {serial!r}")
        click.echo(pile_mqtt_password(serial, settings().secret_key))

    @app.cli.group("payments")
    def payments_cli() -> None:
        """Payments: order queries, refunds, bill reconciliation, monthly settlement."""

    @payments_cli.command("query-orders")
    @click.option("--limit", default=100, show_default=True)
    def payments_query_orders(limit: int) -> None:
        """Query orders still unpaid after PAYMENT_QUERY_AFTER_MINUTES (one pass)."""
        from app.jobs.payments import query_stale_orders

        click.echo(f"orders: {query_stale_orders(limit=limit)}")

    @payments_cli.command("process-refunds")
    @click.option("--limit", default=100, show_default=True)
    def payments_process_refunds(limit: int) -> None:
        """Send pending refunds again and check processing ones (one pass)."""
        from app.jobs.payments import process_refunds

        click.echo(f"refunds: {process_refunds(limit=limit)}")

    @payments_cli.command("import-bill")
    @click.option("--provider", type=click.Choice(["wechat", "alipay"]), required=True)
    @click.option("--date", "bill_date", type=click.DateTime(["%Y-%m-%d"]), required=True)
    @click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
                  help="the bill file; without it the bill is fetched from the provider")
    def payments_import_bill(provider: str, bill_date: object, path: str | None) -> None:
        """Reconcile one day's provider trade bill with our orders and refunds."""
        from datetime import datetime
        from pathlib import Path

        from app.domain.errors import DomainError
        from app.services.payments_reconciliation import import_bill
        from app.services.uow import UnitOfWork

        assert isinstance(bill_date, datetime)
        content = Path(path).read_bytes() if path else None
        try:
            view = import_bill(UnitOfWork(), None, provider=provider,
                               bill_date=bill_date.date(), content=content)
        except DomainError as exc:
            raise click.ClickException(f"{exc.code}: {exc.message}") from exc
        run = view.run
        click.echo(f"run {run.id}: {run.bill_rows} bill rows, {run.our_records} of ours, "
                   f"{run.mismatch_count} mismatches")

    @payments_cli.command("settlement")
    @click.option("--company", "company_id", type=int, required=True,
                  help="property company id")
    @click.option("--month", required=True, help="YYYY-MM (Beijing time)")
    @click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv",
                  show_default=True)
    @click.option("--output", type=click.Path(dir_okay=False, writable=True),
                  help="file to write [default: settlement-<company>-<month>.<format>]")
    def payments_settlement(company_id: int, month: str, fmt: str, output: str | None) -> None:
        """Export a property company's monthly settlement as CSV or XLSX."""
        from pathlib import Path

        from app.domain.errors import DomainError
        from app.models import PropertyCompany
        from app.services import payments_settlement as settlement
        from app.services.uow import UnitOfWork

        uow = UnitOfWork()
        if uow.session.get(PropertyCompany, company_id) is None:
            raise click.ClickException(f"no property company {company_id}")
        try:
            result = settlement.monthly_settlement(uow, None, company_id, month)
        except DomainError as exc:
            raise click.ClickException(f"{exc.code}: {exc.message}") from exc
        body = settlement.to_csv(result) if fmt == "csv" else settlement.to_xlsx(result)
        target = Path(output or f"settlement-{company_id}-{month}.{fmt}")
        target.write_bytes(body)
        click.echo(f"wrote {target} (owed to the power company: "
                   f"{result.owed_to_power_company_fen} fen)")

    @app.cli.group("jobs")
    def jobs() -> None:
        """Periodic work: offline detection, abandoned sessions, payment queries."""

    @jobs.command("run")
    def jobs_run() -> None:
        """Run every periodic job on its interval until interrupted."""
        from app.jobs.runner import run_forever

        with contextlib.suppress(KeyboardInterrupt):
            run_forever(app)

    @app.cli.command("create-admin")
    @click.argument("username")
    @click.password_option()
    def create_admin(username: str, password: str) -> None:
        """Create a platform admin (the first user of a new installation)."""
        user = demo.create_platform_admin(username, password)
        click.echo(f"platform admin {user.username} created (id {user.id})")
