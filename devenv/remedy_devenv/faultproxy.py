"""A scriptable fault proxy between a client (the operator) and the kube-apiserver.

Why this exists: the dangerous failures of a mutating call are the ambiguous ones, where the
client cannot know whether the API server applied the change: the request reached the server
and only the response was lost (timeout, 504 from a load balancer), or the connection was
reset. Those cannot be produced by stopping the apiserver. This proxy terminates TLS on
loopback with the control plane's own serving certificate (so a kubeconfig with the cluster CA
just points at another port), forwards each request to the real apiserver on its own upstream
connection, and can, per verb/resource/namespace/name and per n-th matching request:

* ``forward_then_504``   forward, let the apiserver apply it, answer the client 504;
* ``forward_then_reset`` forward, let the apiserver apply it, reset the client connection;
* ``status``             answer ``code`` (500, 503, 504...) without forwarding;
* ``reset``              reset the client connection without forwarding;
* ``delay``              wait ``seconds``, then forward;
* ``hang``               never answer (hold the connection for ``seconds``, then reset).

Everything else, watches included, streams through unchanged. Each request is forwarded with
``Connection: close`` so the proxy never has to parse response framing: the upstream closes the
stream when the response ends, and the proxy then closes the client connection (clients open a
new one; watches stream until either side closes).

Used by tests/reliability/test_faults.py; runnable by hand with
``python -m remedy_devenv.faultproxy --state-dir DIR --rule '{"verb": "patch", ...}'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ACTIONS = ("forward_then_504", "forward_then_reset", "status", "reset", "delay", "hang")
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What a request does, in the apiserver's vocabulary (as in its audit log)."""

    method: str
    path: str
    verb: str  # get, list, watch, create, update, patch, delete
    resource: str  # "deployments", "deployments/scale", "" for non-resource paths
    namespace: str
    name: str


def classify(method: str, target: str) -> RequestInfo:
    """Map an HTTP request line onto (verb, resource[/subresource], namespace, name)."""
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    parts = [p for p in url.path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return RequestInfo(method, url.path, method.lower(), "", "", "")
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    if method == "GET":
        verb = "watch" if query.get("watch", ["false"])[0] in ("true", "1") else ("get" if name else "list")
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return RequestInfo(method, url.path, verb, resource, namespace, name)


@dataclasses.dataclass
class FaultRule:
    """Apply `action` to matching requests number nth .. nth+times-1 (1-based); None = any."""

    action: str
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    nth: int = 1
    times: int = 1
    code: int = 504
    seconds: float = 0.0
    matched: int = 0  # requests that matched so far
    fired: int = 0  # requests the fault was applied to

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {ACTIONS}")

    def matches(self, req: RequestInfo) -> bool:
        return all(want is None or want == got for want, got in (
            (self.verb, req.verb), (self.resource, req.resource),
            (self.namespace, req.namespace), (self.name, req.name)))


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request that passed through, and the fault applied to it (or "forward")."""

    at: float
    request: RequestInfo
    fault: str
    upstream_status: int | None  # status line code the apiserver sent, if forwarded


class FaultProxy:
    """TLS-terminating proxy on 127.0.0.1:<free port> in front of `upstream` (https URL)."""

    def __init__(self, upstream: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 443)
        self._client_ctx = ssl.create_default_context(cafile=str(ca_file))
        self._client_ctx.set_alpn_protocols(["http/1.1"])
        self._server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_ctx.load_cert_chain(str(cert_file), str(key_file))
        self._server_ctx.set_alpn_protocols(["http/1.1"])  # no HTTP/2: one request per stream
        self.rules: list[FaultRule] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @classmethod
    def for_control_plane(cls, cp: Any) -> FaultProxy:
        """A proxy in front of a remedy_devenv.cluster.ControlPlane, serving its own cert."""
        return cls(cp.server, cp.pki / "ca.crt", cp.pki / "apiserver.crt", cp.pki / "apiserver.key")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- scripting ------------------------------------------------------------------------------
    def add(self, action: str, **match: Any) -> FaultRule:
        """Add a rule, e.g. add("forward_then_504", verb="patch", resource="deployments/scale")."""
        rule = FaultRule(action, **match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def requests(self, verb: str | None = None, resource: str | None = None,
                 name: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (verb is None or s.request.verb == verb)
                    and (resource is None or s.request.resource == resource)
                    and (name is None or s.request.name == name)]

    def _choose(self, req: RequestInfo) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(req):
                    rule.matched += 1
                    if rule.nth <= rule.matched < rule.nth + rule.times:
                        rule.fired += 1
                        return rule
        return None

    # -- serving --------------------------------------------------------------------------------
    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self._server_ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        try:
            head, body = _read_request(conn)
            if head is None:
                return
            method, target = head[0].split(" ")[:2]
            req = classify(method, target)
            rule = self._choose(req)
            action = rule.action if rule else "forward"
            upstream_status = None
            if action == "delay" and rule is not None:
                time.sleep(rule.seconds)
            if action in ("reset", "status", "hang"):
                self._log(req, action, None)
                if action == "status" and rule is not None:
                    _send_status(conn, rule.code)
                    conn.close()
                else:
                    if action == "hang" and rule is not None:
                        time.sleep(rule.seconds)
                    _reset(conn)
                return
            up = self._connect_upstream()
            try:
                up.sendall(_rewrite_head(head) + body)
                if action in ("forward_then_504", "forward_then_reset"):
                    upstream_status = _drain(up)  # the apiserver finishes the request
                    self._log(req, action, upstream_status)
                    if action == "forward_then_504":
                        _send_status(conn, 504)
                        conn.close()
                    else:
                        _reset(conn)
                    return
                self._log(req, action, None)
                _relay(up, conn)
            finally:
                up.close()
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _connect_upstream(self) -> ssl.SSLSocket:
        sock = socket.create_connection(self.upstream, timeout=10)
        sock.settimeout(None)  # watches are long; the apiserver closes them
        return self._client_ctx.wrap_socket(sock, server_hostname=self.upstream[0])

    def _log(self, req: RequestInfo, fault: str, status: int | None) -> None:
        with self._lock:
            self.seen.append(Seen(time.time(), req, fault, status))


def _read_request(conn: ssl.SSLSocket) -> tuple[list[str] | None, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
        if len(buf) > 1 << 20:
            return None, b""
    raw_head, rest = buf.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not rest.endswith(b"0\r\n\r\n"):  # good enough for the clients we proxy
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
    else:
        length = int(headers.get("content-length") or 0)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
    return lines, rest


def _rewrite_head(lines: list[str]) -> bytes:
    kept = [ln for ln in lines[1:] if ln.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
    return ("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def _drain(up: ssl.SSLSocket) -> int | None:
    """Read the whole upstream response; return its status code."""
    data = b""
    while True:
        try:
            chunk = up.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _relay(up: ssl.SSLSocket, conn: ssl.SSLSocket) -> None:
    while True:
        chunk = up.recv(65536)
        if not chunk:
            return
        conn.sendall(chunk)  # raises when the client went away: ends a cancelled watch


def _send_status(conn: ssl.SSLSocket, code: int) -> None:
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": f"fault proxy: injected {code}", "reason": "InternalError",
                       "code": code}).encode()
    conn.sendall(f"HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def _reset(conn: ssl.SSLSocket) -> None:
    """Close with RST (SO_LINGER 0): the client sees ECONNRESET, not a clean EOF."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    from .cluster import from_state_dir, write_kubeconfig

    parser = argparse.ArgumentParser(prog="python -m remedy_devenv.faultproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="control plane state dir (scripts/cluster)")
    parser.add_argument("--rule", action="append", default=[], help='JSON FaultRule, e.g. {"action": "forward_then_504", '
                        '"verb": "patch", "resource": "deployments/scale"}')
    parser.add_argument("--user", default="admin", help="user of the kubeconfig written next to the state dir")
    args = parser.parse_args(argv)
    cp = from_state_dir(args.state_dir)
    proxy = FaultProxy.for_control_plane(cp)
    for r in args.rule:
        proxy.add(**json.loads(r))
    kc = write_kubeconfig(cp.state_dir / f"faultproxy-{args.user}.kubeconfig", proxy.url, cp.pki / "ca.crt",
                          cp.user_token(args.user), args.user)
    print(f"fault proxy on {proxy.url} -> {cp.server}; export KUBECONFIG={kc}", file=sys.stderr)
    proxy.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
