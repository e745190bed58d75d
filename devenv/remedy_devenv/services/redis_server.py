"""Redis with requirepass, on loopback.
"""

from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..testkit import HOST
from .process import ManagedProcess


class RedisServer(ManagedProcess):
    """redis-server without persistence, optionally behind `requirepass`."""

    name = "redis"

    def __init__(
        self, state_dir: Path | str, port: int, password: str | None = None, host: str = HOST
    ) -> None:
        super().__init__(state_dir, port, host)
        self.password = password

    def command(self) -> list[str]:
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
            "--dir", str(self.state_dir), "--daemonize", "no",
            # Tests read DEBUG HTSTATS to wait until an incremental rehash is over: SCAN may
            # return a key twice while one runs, and exact-count tests must not depend on luck.
            "--enable-debug-command", "local",
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def is_ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"
