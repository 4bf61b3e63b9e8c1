"""An ASGI app served by uvicorn in a daemon thread on loopback: the one way tests, benchmarks and
``oml demo`` get a real endpoint without a second process."""

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
    """Serve ``app`` with uvicorn in a daemon thread on 127.0.0.1 (a free port unless given).

    Use as a context manager; ``url`` is the base URL (``http://127.0.0.1:PORT``) once started. The app's
    lifespan runs. Refuses (EndpointError) when the server does not come up within ``timeout`` seconds;
    the server is shut down when the block exits.
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
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="omlkit-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise EndpointError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout)
        self.sock.close()
