"""The composition root: one runtime holds the database, the bus and the workers of the
services a process runs (all of them for `serve`, one for `ingest|scoring|badges`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from services.badges import applications_api, program_api, rewards, rewards_api
from services.badges import consumer as badges_consumer
from services.console.router import router as console_router
from services.ingest.router import router as ingest_router
from services.scoring import consumer as scoring_consumer
from services.scoring import featured_api, preview_api, program_settings_api, recommendations_api
from services.scoring import refresher as standings_refresher
from services.scoring.router import router as scoring_router
from shared import db, ops, program_settings
from shared.auth import Scope, ensure_key
from shared.bus import create_bus
from shared.bus.base import Handler
from shared.bus.processor import sleep_unless_stopped
from shared.bus.relay import Outbox
from shared.errors import install_error_handlers
from shared.migrate import prepare_database
from shared.openapi import install_openapi
from shared.settings import Settings
from shared.web import Context, install_body_limits, install_pool_holder_names

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    routers: tuple[APIRouter, ...]
    consumers: tuple[tuple[str, Callable[[Settings], Handler]], ...] = ()
    relays_events: bool = False  # the event log's relay runs where events are accepted
    # Other outboxes the service writes, each published to its topic by a relay of its own.
    outboxes: tuple[Callable[[Settings], Outbox], ...] = ()
    # Background loops of the service, each given the context (they stop with the bus).
    loops: tuple[Callable[[Context], Awaitable[None]], ...] = ()
    # Gauges the service reads from the database when /metrics is scraped (shared/ops.py).
    metrics: tuple[Callable[[Context], Awaitable[None]], ...] = ()


SERVICES: dict[str, Service] = {
    "ingest": Service(routers=(ingest_router,), relays_events=True),
    "scoring": Service(
        routers=(
            scoring_router,
            featured_api.router,
            recommendations_api.router,
            preview_api.router,
            program_settings_api.router,
            console_router,  # the operator page, /ops (docs/operations.md)
        ),
        consumers=((scoring_consumer.GROUP, scoring_consumer.make_handler),),
        loops=(standings_refresher.run,),  # precomputed standings (services/scoring/refresher.py)
    ),
    "badges": Service(
        routers=(applications_api.router, rewards_api.router, program_api.router),
        consumers=((badges_consumer.GROUP, badges_consumer.make_handler),),
        outboxes=(rewards.outbox,),
        metrics=(program_api.refresh_voucher_gauges,),
    ),
}
ALL = tuple(SERVICES)
# Each consumer group and how to make its handler.
CONSUMERS: dict[str, Callable[[Settings], Handler]] = {
    group: make_handler for s in SERVICES.values() for group, make_handler in s.consumers
}
CONSUMER_GROUPS = tuple(CONSUMERS)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        services: tuple[str, ...] = ALL,
        *,
        database_url: str | None = None,
        worker_services: tuple[str, ...] | None = None,
    ) -> None:
        self.settings = settings
        self.services = [SERVICES[name] for name in services]
        # Whose workers (consumers, relays) run here; None = every service's. A process of
        # `serve` split over several (services/supervisor.py) runs some of them, or none.
        self.worker_services = [
            SERVICES[name] for name in (services if worker_services is None else worker_services)
        ]
        self._database_url = database_url
        self.context: Context | None = None
        self._workers: list[asyncio.Task] = []

    async def connect(self) -> Context:
        url = self._database_url or await prepare_database(self.settings)
        logger.info("database", extra={"url": db.describe(url)})
        engine = db.create_engine(url, self.settings)
        sessionmaker = db.create_sessionmaker(engine)
        self.context = Context(
            self.settings,
            engine,
            sessionmaker,
            create_bus(self.settings, sessionmaker),
            CONSUMER_GROUPS,
        )
        if self.settings.bootstrap_admin_key:
            async with sessionmaker() as session, session.begin():
                await ensure_key(
                    session, "bootstrap-admin", self.settings.bootstrap_admin_key, list(Scope)
                )
        # The environment seeds the program settings' first version; later it only warns.
        async with sessionmaker() as session, session.begin():
            await program_settings.seed_or_compare(session, self.settings)
        await self.context.bus.start()
        return self.context

    def start_workers(self) -> None:
        bus = self.context.bus
        for service in self.worker_services:
            for group, make_handler in service.consumers:
                handler = make_handler(self.settings)
                self._spawn(f"consumer:{group}", lambda g=group, h=handler: bus.consume(g, h))
            if service.relays_events:
                self._spawn("relay", bus.relay)
            for make_outbox in service.outboxes:
                outbox = make_outbox(self.settings)
                self._spawn(f"relay:{outbox.topic}", lambda o=outbox: bus.relay_outbox(o))
            for loop in service.loops:
                self._spawn(loop.__module__, lambda w=loop: w(self.context))

    async def stop_workers(self) -> None:
        """Each worker finishes the batch in hand; nothing is lost, nothing half-applied."""
        self.context.bus.stop()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def close(self) -> None:
        await self.stop_workers()
        await self.context.bus.close()
        await self.context.engine.dispose()

    def _spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self._workers.append(asyncio.create_task(self._supervise(name, work), name=name))

    async def _supervise(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run a worker until the bus stops; restart it, after a pause, if it crashes."""
        db.POOL_HOLDER.set(name)  # this task's own context: its connections carry its name
        stopping = self.context.bus.stopping
        delay = self.settings.consumer_retry_initial_ms / 1000
        while not stopping.is_set():
            try:
                await work()
                return
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and (
                    asyncio.current_task().cancelling() or stopping.is_set()
                ):
                    raise  # this worker is being stopped
                # (A CancelledError otherwise is a library's own leaking out, as aiokafka's
                # stop() did after a broker loss: a crash, not a reason to end unnoticed.)
                logger.exception(
                    "worker crashed, restarting", extra={"worker": name, "in_s": delay}
                )
                await sleep_unless_stopped(stopping, delay)
                delay = min(delay * 2, self.settings.consumer_retry_max_ms / 1000)

    def create_app(self, *, manage_lifecycle: bool = True) -> FastAPI:
        """The HTTP app. With `manage_lifecycle` it connects and runs the workers itself;
        without, the caller has connected (tests drive workers directly)."""

        @asynccontextmanager
        async def lifespan(app: FastAPI):
            app.state.context = await self.connect()
            self.start_workers()
            try:
                yield
            finally:
                await self.close()

        app = FastAPI(
            title="creator-activity",
            version="0.1.0",
            summary="The square's creator certification incentive program",
            lifespan=lifespan if manage_lifecycle else None,
        )
        if not manage_lifecycle:
            app.state.context = self.context
        install_error_handlers(app)
        install_body_limits(app, self.settings)  # size and nesting of every body
        install_pool_holder_names(app)  # who held the pool, when it runs out
        install_openapi(app, self.settings)  # every error of every operation, in one place
        app.include_router(ops.router)
        app.state.metrics_refreshers = [m for service in self.services for m in service.metrics]
        for service in self.services:
            for router in service.routers:
                app.include_router(router)
        return app
