"""The `creator-activity` command."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer
import uvicorn

from services.runtime import ALL, Runtime
from shared import db
from shared.auth import Scope, create_key
from shared.logs import configure_logging
from shared.migrate import upgrade
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
    configure_logging(settings.log_level)
    runtime = Runtime(settings, services)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown (workers finish their batch), then
    # raises the signal again; exiting normally on it lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(runtime.create_app(), host=host, port=port, log_config=None, lifespan="on")


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
    """The badges service: its consumer group and the reward APIs."""
    _serve(("badges",), host, port)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    settings = Settings()
    configure_logging(settings.log_level)
    url = db.database_url(settings)
    upgrade(url)
    typer.echo(f"database is up to date: {db.describe(url)}")


@api_keys.command("create")
def create_api_key(
    name: Annotated[str, typer.Option(help="who the key is for")],
    scope: Annotated[list[Scope], typer.Option(help="events:write, read or admin; repeatable")],
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    settings = Settings()

    async def create() -> str:
        engine = db.create_engine(db.database_url(settings), settings)
        try:
            async with db.create_sessionmaker(engine)() as session, session.begin():
                return await create_key(session, name, scope)
        finally:
            await engine.dispose()

    key = asyncio.run(create())
    typer.echo(f"created key {name!r} with scopes {', '.join(s.value for s in scope)}")
    typer.echo(key)


def main() -> None:
    app()
