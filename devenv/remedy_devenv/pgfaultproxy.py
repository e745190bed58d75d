"""A PostgreSQL wire-protocol fault proxy: lets the server COMMIT, then cuts the client off.

Why this exists: the dangerous failure of a database write is the lost answer to COMMIT. The
server committed (or not: the client cannot know), and only the reply was lost. Stopping the
server cannot produce that; this proxy can. It forwards a client's connection to the real
server and reads the client's messages (the v3 protocol frames them: a type byte and a length).
When it sees a simple-protocol ``COMMIT`` (what psycopg sends when a transaction block ends), it:

* ``forward_then_reset`` (default): forwards it, waits until the server answered
  ReadyForQuery (the commit is done and durable), drops that answer and resets the client
  connection. The client saw its COMMIT go out and the connection die.
* ``reset``: resets the client connection without forwarding (the server rolls back).

Only plain connections (``sslmode=disable``): the proxy must read the frames. Everything before
the first COMMIT, and every other connection, streams through unchanged. ``cuts`` counts the
connections cut; ``commits_seen`` the COMMITs the proxy saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

READY_FOR_QUERY = b"Z"


@dataclass
class PgFaultProxy:
    upstream_host: str
    upstream_port: int
    mode: str = "forward_then_reset"  # or "reset"
    armed: bool = True  # cut at the next COMMIT; disarmed after one cut
    cuts: int = 0
    commits_seen: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def dsn(self, user: str, password: str, dbname: str = "app") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} password={password} sslmode=disable gssencmode=disable"

    def start(self) -> PgFaultProxy:
        self._thread = threading.Thread(target=self._run, name="pgfaultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("pgfaultproxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        cutting = asyncio.Event()
        committed = asyncio.Event()
        down = asyncio.create_task(self._server_to_client(sreader, cwriter, cutting, committed))
        try:
            # The startup message has no type byte; every later frontend message has one.
            head = await creader.readexactly(4)
            swriter.write(head + await creader.readexactly(struct.unpack("!I", head)[0] - 4))
            while True:
                kind = await creader.readexactly(1)
                size = await creader.readexactly(4)
                body = await creader.readexactly(struct.unpack("!I", size)[0] - 4)
                if kind == b"Q" and body.rstrip(b"\0").strip().upper() == b"COMMIT":
                    self.commits_seen += 1
                    if self.armed:
                        self.armed = False
                        cutting.set()
                        if self.mode == "forward_then_reset":
                            swriter.write(kind + size + body)
                            await swriter.drain()
                            await asyncio.wait_for(committed.wait(), 10)
                        self.cuts += 1
                        _reset(cwriter)
                        return
                swriter.write(kind + size + body)
                await swriter.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            down.cancel()
            swriter.close()
            with contextlib.suppress(Exception):
                cwriter.close()

    @staticmethod
    async def _server_to_client(sreader: asyncio.StreamReader, cwriter: asyncio.StreamWriter,
                                cutting: asyncio.Event, committed: asyncio.Event) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind = await sreader.readexactly(1)
                size = await sreader.readexactly(4)
                body = await sreader.readexactly(struct.unpack("!I", size)[0] - 4)
                if cutting.is_set():
                    # The answer to COMMIT (CommandComplete, then ReadyForQuery) is dropped.
                    if kind == READY_FOR_QUERY:
                        committed.set()
                    continue
                cwriter.write(kind + size + body)
                await cwriter.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a broken network path or a killed proxy would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
