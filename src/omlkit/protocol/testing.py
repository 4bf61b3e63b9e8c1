"""Helpers for running protocol servers in tests and benchmarks: a uvicorn server in a thread on a free
loopback port, and a throw-away reset of a PostgreSQL test database.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from omlkit.errors import EndpointError


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerThread:
    """Serve an ASGI ``app`` with uvicorn in a daemon thread on 127.0.0.1 (a free port unless given).

    Use as a context manager; ``url`` is the base URL once started. Refuses (EndpointError) when the
    server does not come up within ``timeout`` seconds.
    """

    def __init__(self, app: Any, port: int | None = None, timeout: float = 30.0) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.timeout = timeout
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise EndpointError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout)
        self.sock.close()


def reset_postgres(url: str) -> None:
    """Drop and recreate the ``public`` schema of the database at ``url`` (tests only: all data is lost)."""
    from sqlalchemy import create_engine, text

    from omlkit.protocol.ledger import database_url

    engine = create_engine(database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
