"""Fixtures of the security suite: one operator with metrics and the webhook on, the user
ClusterRoles, per-test namespaces, and a loopback HTTP endpoint that counts what reaches it.

The endpoint is the witness the operator does not control: "the request never left the
operator" is asserted on its counter, not on anything the operator reports.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from kubernetes import client

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.testkit import free_port

REPO = Path(__file__).resolve().parents[2]
PREFIX = "s13"


@dataclass
class SecOperator:
    op: OperatorProcess
    metrics_url: str
    webhook_url: str
    webhook_token: str
    log_path: Path


@pytest.fixture(scope="session")
def user_roles(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(REPO / "deploy/rbac-users/roles.yaml"))


@pytest.fixture(scope="session")
def sec_operator(control_plane: ControlPlane, operator_factory: Callable[..., OperatorProcess], user_roles: None,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecOperator]:
    tmp = tmp_path_factory.mktemp("sec-operator")
    token = secrets.token_hex(16)
    (tmp / "token").write_text(token)
    metrics, webhook = free_port(), free_port()
    op = operator_factory(env={"REMEDY_METRICS_PORT": str(metrics), "REMEDY_WEBHOOK_PORT": str(webhook),
                               "REMEDY_WEBHOOK_TOKEN_FILE": str(tmp / "token"), "REMEDY_WEBHOOK_READ_TIMEOUT": "2"},
                          args=["-n", f"{PREFIX}-*"]).start()
    op.wait_ready(timeout=60)
    yield SecOperator(op, f"http://127.0.0.1:{metrics}/metrics", f"http://127.0.0.1:{webhook}/alertmanager", token,
                      op.log_path)
    op.stop()


@pytest.fixture
def ns(kube_admin: client.ApiClient) -> Iterator[str]:
    name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube_admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    client.CoreV1Api(kube_admin).delete_namespace(name)


def bind(cp: ControlPlane, ns: str, user: str, *cluster_roles: str) -> None:
    for role in cluster_roles:
        cp.kubectl("-n", ns, "create", "rolebinding", f"{user}-{role.replace(':', '-').lower()}"[:63],
                   f"--clusterrole={role}", f"--user={user}")


def kubectl_remedy(cp: ControlPlane, user: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The kubectl plugin, unchanged, run as `user` through the built kubectl's plugin discovery."""
    assert cp.bin_dir is not None
    env = dict(os.environ, KUBECONFIG=str(cp.user_kubeconfig(user)),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), str(cp.bin_dir), os.environ.get("PATH", "")]))
    return subprocess.run([str(cp.bin_dir / "kubectl"), "remedy", *args], capture_output=True, text=True, env=env,
                          timeout=60, input=stdin)


def every_encoding(value: str) -> dict[str, str]:
    """How an endpoint might echo a credential back (the redaction test's attack surface)."""
    raw = value.encode()
    return {
        "raw": value,
        "json": json.dumps(value)[1:-1],
        "json_ascii": json.dumps(value, ensure_ascii=True)[1:-1],
        "url": quote(value, safe=""),
        "url_plus": quote_plus(value),
        "base64": base64.b64encode(raw).decode(),
        "base64_embedded": base64.b64encode(b"user:" + raw).decode(),
        "base64_url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "prefix": value[:max(8, len(value) // 2)],
        "suffix": value[-max(8, len(value) // 2):],
    }


@dataclass
class Endpoint:
    """A loopback HTTP server: counts requests, remembers Authorization headers, and answers
    with ``status`` and (in echo mode) a body that repeats the bearer token in every encoding."""

    status: int = 200
    echo: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Endpoint:
        ep = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization") or ""
                ep.requests.append({"method": self.command, "path": self.path, "auth": auth, "body": body})
                token = auth[7:] if auth.startswith("Bearer ") else ""
                if ep.echo and token:
                    payload = json.dumps({"error": "invalid token", "token": token,
                                          "echo": every_encoding(token)}, ensure_ascii=False)
                    out = (payload + "\n" + "\n".join(every_encoding(token).values())).encode()
                else:
                    out = b'{"ok": true}'
                self.send_response(ep.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint().start()
    yield ep
    ep.stop()
