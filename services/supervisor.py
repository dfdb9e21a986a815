"""One command, several processes, so that one machine's cores are all used.

With `serve_web_processes` N > 1, N HTTP processes listen on the port, each on a socket of its own
bound with SO_REUSEPORT, so that the kernel spreads the connections over them (on one shared
socket, the process that wakes first accepts every pending connection: a few keep-alive clients
opened together all landed on one process); each serves every API of the command. With
`serve_workers_apart`, each consumer group runs in a process of its own (with its outbox's
relay: badges and the rewards relay), or in `serve_group_processes` of them (on Kafka they
share the topic's partitions), and the events relay stays with the first HTTP process, where
events are accepted. Those consumer processes run at a lower CPU priority
(`serve_workers_nice`): when the cores are short, a client waiting for its 202 goes first, and
the consumers, which nobody waits on, catch up when the load eases. Nothing else changes:
every process is a `Runtime` like the one a single process runs, on the same database and bus,
so their correctness is that of N processes of a group, which the buses already guarantee
(docs/architecture.md, "The bus").

The parent only supervises: it prepares the database (the embedded PostgreSQL lives as long as
it does), holds the port (bound, not listening: taken or not is known before any child starts),
starts the children, starts again one that dies (after a pause; the connections waiting in its
socket's queue are lost with it), and on SIGTERM or SIGINT stops them all; each finishes the
batch in hand, as a single process does.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from services import garbage_collector
from services.runtime import SERVICES, Runtime
from shared.logs import configure_logging
from shared.settings import Settings

logger = logging.getLogger(__name__)

STOP_WITHIN_S = 60  # a child that has not stopped by then is killed
RESTART_PAUSE_S = 1.0


@dataclass(frozen=True)
class Child:
    name: str
    kind: str  # "web" (uvicorn on the shared socket) or "workers" (consumers only)
    services: tuple[str, ...]  # whose routers it serves (web) or whose workers it runs
    workers: tuple[str, ...]  # whose consumers and relays it runs


def split(settings: Settings) -> bool:
    return settings.serve_web_processes > 1 or settings.serve_workers_apart


def plan(services: tuple[str, ...], settings: Settings) -> list[Child]:
    """The processes of a command running `services` with these settings."""
    apart = (
        [name for name in services if SERVICES[name].consumers]
        if settings.serve_workers_apart
        else []
    )
    with_web = tuple(name for name in services if name not in apart)
    children = [
        Child(f"web-{i}", "web", services, with_web if i == 0 else ())
        for i in range(settings.serve_web_processes)
    ]
    copies = settings.serve_group_processes
    children += [
        Child(name if copies == 1 else f"{name}-{i}", "workers", (name,), (name,))
        for name in apart
        for i in range(copies)
    ]
    return children


def serve(services: tuple[str, ...], settings: Settings, url: str, host: str, port: int) -> None:
    """Run the command's processes until SIGTERM or SIGINT; then stop them all."""
    held = _hold(host, port)
    port = held.getsockname()[1]
    context = multiprocessing.get_context("spawn")  # a clean interpreter each, no forked loop
    children = plan(services, settings)
    running: dict[Child, multiprocessing.process.BaseProcess] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(child: Child) -> None:
        process = context.Process(
            target=_run_child,
            args=(child, url, None if REUSE_PORT else held, (host, port)),
            name=child.name,
            daemon=False,
        )
        process.start()
        running[child] = process
        logger.info("process started", extra={"child": child.name, "pid": process.pid})

    for child in children:
        start(child)
    while not stopping:
        time.sleep(0.2)
        for child, process in list(running.items()):
            if not process.is_alive() and not stopping:
                logger.error(
                    "process exited, starting it again",
                    extra={"child": child.name, "exit_code": process.exitcode},
                )
                time.sleep(RESTART_PAUSE_S)
                start(child)
    for process in running.values():
        if process.is_alive():
            process.terminate()  # SIGTERM: finish the batch in hand, then exit
    deadline = time.monotonic() + STOP_WITHIN_S
    for child, process in running.items():
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            logger.error("process did not stop in time; killed", extra={"child": child.name})
            process.kill()
            process.join(5)
    held.close()


# Linux spreads a port's connections over the listening sockets that share it; elsewhere the
# option exists but does not balance, so the children share the parent's socket there.
REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def _hold(host: str, port: int) -> socket.socket:
    """The parent's socket: the listening one the children share, or, with SO_REUSEPORT, one
    bound only, which keeps the port. Any process of the same user could then join the port and
    silently take a share of its connections (a second `serve` started by mistake), so a plain
    bind comes first: it fails, as a lone server's would, while anything holds the port."""
    if not REUSE_PORT:
        return _bind(host, port, listen=True)
    probe = _bind(host, port, listen=False, reuse_port=False)
    port = probe.getsockname()[1]
    probe.close()
    return _bind(host, port, listen=False)


def _bind(host: str, port: int, *, listen: bool, reuse_port: bool = REUSE_PORT) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
        sock.set_inheritable(True)
    return sock


def _run_child(
    child: Child, url: str, shared: socket.socket | None, address: tuple[str, int]
) -> None:
    settings = Settings()
    if child.kind == "workers" and settings.serve_workers_nice and hasattr(os, "nice"):
        os.nice(settings.serve_workers_nice)  # before the name: a named child has its priority
    _name_process(f"ca-{child.name}")
    configure_logging(settings.log_level, settings.log_format)
    if child.kind == "web":
        _run_web(child, settings, url, shared or _bind(*address, listen=True))
    else:
        if shared is not None:
            shared.close()
        _run_loop(_run_workers(child, settings, url))


def _run_web(child: Child, settings: Settings, url: str, listener: socket.socket) -> None:
    import uvicorn

    runtime = Runtime(settings, child.services, database_url=url, worker_services=child.workers)
    # uvicorn stops gracefully on SIGTERM, then raises it again: exit normally on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(runtime.create_app(), log_config=None, lifespan="on")
    garbage_collector.settle(settings.gc_young_threshold)
    uvicorn.Server(config).run(sockets=[listener])


async def _run_workers(child: Child, settings: Settings, url: str) -> None:
    runtime = Runtime(settings, child.services, database_url=url, worker_services=child.workers)
    await runtime.connect()
    garbage_collector.settle(settings.gc_young_threshold)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    runtime.start_workers()
    try:
        await stopped.wait()
    finally:
        await runtime.close()


def _run_loop(work) -> None:
    """uvloop when it is installed (as uvicorn does), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(work)


def _name_process(name: str) -> None:
    """The name `ps` and `top` show (Linux; at most 15 bytes), so each process can be told
    apart when its memory or CPU is looked at; and SIGTERM when the parent dies, so that no
    child outlives the command (on Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
