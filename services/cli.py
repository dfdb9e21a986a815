"""The `creator-activity` command."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from services import garbage_collector, supervisor
from services.runtime import ALL, CONSUMER_GROUPS, CONSUMERS, Runtime
from services.scoring import featured, months
from services.scoring import reindex as reindexing
from shared import db
from shared.auth import Scope, create_key, list_keys, revoke_keys
from shared.bus import dead_letters
from shared.bus import log as event_log
from shared.bus.processor import BatchProcessor
from shared.logs import configure_logging
from shared.migrate import SchemaBehind, prepare_database, upgrade
from shared.program_time import MONTH
from shared.settings import Settings

app = typer.Typer(
    help="The creator incentive program backend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
api_keys = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(api_keys, name="api-keys")

Host = Annotated[str, typer.Option(help="interface to listen on")]
Port = Annotated[int, typer.Option(help="port to listen on")]


def _serve(services: tuple[str, ...], host: str, port: int) -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    # Before the server starts: a schema behind stops the process with one line.
    url = asyncio.run(prepare_database(settings))
    if supervisor.split(settings):  # several processes (settings serve_web_processes, ...)
        supervisor.serve(services, settings, url, host, port)
        return
    runtime = Runtime(settings, services, database_url=url)
    app = runtime.create_app()
    garbage_collector.settle(settings.gc_young_threshold)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown (workers finish their batch), then
    # raises the signal again; exiting normally on it lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, log_config=None, lifespan="on")


@app.command()
def serve(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """The whole system in one process: every API and every consumer."""
    _serve(ALL, host, port)


@app.command()
def ingest(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """The ingest service: POST /v1/events and the outbox relay."""
    _serve(("ingest",), host, port)


@app.command()
def scoring(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """The scoring service: its consumer group and the ranking APIs."""
    _serve(("scoring",), host, port)


@app.command()
def badges(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """The badges service: its consumer group."""
    _serve(("badges",), host, port)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    url = db.database_url(settings)
    upgrade(url)
    typer.echo(f"database is up to date: {db.describe(url)}")


def _in_transaction(work):
    """Run `work(session)` in one transaction on the configured database."""
    settings = Settings()

    async def run():
        engine = db.create_engine(await prepare_database(settings), settings)
        try:
            async with db.create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@api_keys.command("create")
def create_api_key(
    name: Annotated[str, typer.Option(help="who the key is for")],
    scope: Annotated[list[Scope], typer.Option(help="events:write, read or admin; repeatable")],
    rate_limit: Annotated[
        int | None,
        typer.Option(min=1, help="requests per second (token bucket, burst 2N); default: none"),
    ] = None,
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    key = _in_transaction(lambda session: create_key(session, name, scope, rate_limit=rate_limit))
    limit = f", at most {rate_limit} requests/s" if rate_limit else ""
    typer.echo(f"created key {name!r} with scopes {', '.join(s.value for s in scope)}{limit}")
    typer.echo(key)


@api_keys.command("list")
def list_api_keys() -> None:
    """Every key: name, scopes, rate limit, creation and revocation times (never the key)."""
    keys = _in_transaction(list_keys)
    rows = [("NAME", "SCOPES", "RATE LIMIT", "CREATED", "REVOKED")]
    rows += [
        (
            k.name,
            ",".join(k.scopes),
            f"{k.rate_limit}/s" if k.rate_limit else "-",
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-",
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


@api_keys.command("revoke")
def revoke_api_keys(
    name: Annotated[str, typer.Option(help="the name of the keys to revoke")],
) -> None:
    """Revoke every key of that name at once: they are refused (401) from then on."""
    revoked = _in_transaction(lambda session: revoke_keys(session, name))
    if revoked is None:
        typer.echo(f"no key is named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {revoked} key{'' if revoked == 1 else 's'} named {name!r}")


# --- consumer groups: dead letters and replays from the log --------------------------------

dead_letters_cli = typer.Typer(help="Events a consumer group parked.", no_args_is_help=True)
app.add_typer(dead_letters_cli, name="dead-letters")

GroupOption = Annotated[str, typer.Option("--group", help=f"one of {', '.join(CONSUMER_GROUPS)}")]


def _known_group(group: str) -> str:
    if group not in CONSUMERS:
        raise typer.BadParameter(f"{group!r}: the groups are {', '.join(CONSUMER_GROUPS)}")
    return group


async def _with_sessionmaker(settings: Settings, work):
    engine = db.create_engine(await prepare_database(settings), settings)
    try:
        return await work(db.create_sessionmaker(engine))
    finally:
        await engine.dispose()


@dead_letters_cli.command("list")
def list_dead_letters(
    group: Annotated[str | None, typer.Option("--group", help="only this group")] = None,
) -> None:
    """Parked events: group, log position, source, id, type, attempts, the last error."""

    async def listing(sessionmaker):
        async with sessionmaker() as session:
            return await dead_letters.listing(session, group)

    rows = asyncio.run(_with_sessionmaker(Settings(), listing))
    for row in rows:
        typer.echo(
            f"{row.group_name}  seq={row.seq}  source={row.source}  id={row.event_id}  "
            f"type={row.type}  attempts={row.attempts}  parked={row.parked_at.isoformat()}  "
            f"error={row.error[:200]}"
        )
    typer.echo(f"{len(rows)} dead letter{'' if len(rows) == 1 else 's'}")


@dead_letters_cli.command("replay")
def replay_dead_letters(
    group: Annotated[str | None, typer.Option("--group", help="only this group")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="only the event of this id")] = None,
    source: Annotated[str | None, typer.Option(help="with --id: the event's source")] = None,
) -> None:
    """Put parked events back through their group (after fixing what made them fail)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    groups = [_known_group(group)] if group else list(CONSUMER_GROUPS)

    async def replay(sessionmaker):
        reports = {}
        for name in groups:
            handler = CONSUMERS[name](settings)
            reports[name] = await dead_letters.replay(
                sessionmaker, name, handler, event_id=event_id, source=source
            )
        return reports

    reports = asyncio.run(_with_sessionmaker(settings, replay))
    for name, report in reports.items():
        typer.echo(
            f"{name}: {report.applied} applied, {report.failed} failed again, "
            f"{report.not_replayable} without a log position"
        )
    if any(r.failed for r in reports.values()):
        raise typer.Exit(1)


@app.command()
def replay(group: GroupOption) -> None:
    """Apply from the log every event the group has not applied.

    For a new group, one down past the topic's retention, or a broker that lost its data.
    Idempotent; other groups are not touched; safe while the group's consumers run."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    group = _known_group(group)

    async def catch_up(sessionmaker):
        async with sessionmaker() as session:
            up_to = await event_log.last_seq(session)
        handler = CONSUMERS[group](settings)
        processor = BatchProcessor(sessionmaker, group, handler, settings, asyncio.Event())
        return await processor.catch_up(up_to=up_to)

    applied = asyncio.run(_with_sessionmaker(settings, catch_up))
    typer.echo(f"{group}: {applied} events applied from the log")


@app.command()
def rescore(
    month: Annotated[str | None, typer.Option(help="only this month, YYYY-MM")] = None,
) -> None:
    """Rebuild the provisional creator-months from the facts (after a rule change).

    Without --month, the weeks' featured scores too. Settled months and frozen weeks are never
    recomputed."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if month is not None and not MONTH.match(month):
        raise typer.BadParameter(f"{month!r}: a month is YYYY-MM")

    count, posts = asyncio.run(
        _with_sessionmaker(settings, lambda sessionmaker: _rebuild(sessionmaker, settings, month))
    )
    typer.echo(f"{count} creator-months rebuilt from the facts")
    if month is None:
        typer.echo(f"{posts} posts' featured scores rebuilt")


async def _rebuild(sessionmaker, settings: Settings, month: str | None) -> tuple[int, int]:
    """(creator-months rebuilt, posts' featured scores rebuilt): the provisional months (of
    `month`, or all) and, for all, every week's featured scores; frozen and settled ones are
    kept apart, never touched."""
    async with sessionmaker() as session, session.begin():
        pairs = await months.provisional_creator_months(session, month)
        await months.recompute(session, settings, pairs)
        posts = await featured.rebuild(session, settings) if month is None else 0
        return len(pairs), posts


@app.command()
def reindex() -> None:
    """Re-index every post for near-duplicates from its latest text in the log, then rebuild the
    provisional months and featured scores (after a change of the near-duplicate settings).

    Safe while consumers run, and to run again; settled months and frozen weeks never change."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)

    async def work(sessionmaker):
        indexed = await reindexing.reindex(sessionmaker, settings)
        return indexed, await _rebuild(sessionmaker, settings, None)

    (posts, changed), (count, featured_posts) = asyncio.run(_with_sessionmaker(settings, work))
    typer.echo(f"{posts} posts re-indexed, {changed} of them changed their original")
    typer.echo(f"{count} creator-months rebuilt from the facts")
    typer.echo(f"{featured_posts} posts' featured scores rebuilt")


@app.command()
def simulate(
    creators: Annotated[int, typer.Option(min=1, max=10_000, help="how many creators")] = 200,
    month: Annotated[str, typer.Option(help="the month to simulate, YYYY-MM")] = "2026-10",
    seed: Annotated[int, typer.Option(help="same seed, same month, event for event")] = 1,
    url: Annotated[str, typer.Option(help="the running service")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="CREATOR_ACTIVITY_API_KEY", help="a key with scope admin"),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="leaderboard rows shown")] = 20,
) -> None:
    """Post a reproducible demo month through the HTTP API of a running service, settle it
    when it can be, and print its leaderboard and rewards. Running it again changes nothing."""
    from zoneinfo import ZoneInfo

    from rich.console import Console

    from services.simulate.client import ApiError
    from services.simulate.run import Options
    from services.simulate.run import simulate as run_simulation

    if not MONTH.match(month):
        raise typer.BadParameter(f"{month!r}: a month is YYYY-MM", param_hint="--month")
    if not api_key:
        raise typer.BadParameter(
            "an admin key: --api-key or CREATOR_ACTIVITY_API_KEY "
            "(creator-activity api-keys create --name demo --scope admin)",
            param_hint="--api-key",
        )
    zone = ZoneInfo(Settings().program_timezone)  # the zone the service counts months in
    options = Options(creators, month, seed, url.rstrip("/"), api_key, zone, top=top)
    console = Console()
    try:
        code = run_simulation(options, console)
    except (ApiError, TimeoutError) as exc:
        console.print(f"[red]error: {exc}")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except ValidationError as exc:  # a bad setting: one line each, no traceback
        if exc.title != Settings.__name__:
            raise
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            env = f"CREATOR_ACTIVITY_{field.upper()}"
            message = error["msg"].removeprefix("Value error, ")
            print(f"error: invalid setting {env}: {message}", file=sys.stderr)
        sys.exit(2)
    except SchemaBehind as exc:  # one line naming the command that mends it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
