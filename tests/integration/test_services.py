"""Integration tests of the real backing services started by remedy_devenv.services.

Why: every other integration test and the demo lean on these servers behaving like production
ones (password auth, pg_stat_activity, alert routing with a bearer token), so prove it here.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from redis.backoff import NoBackoff
from redis.retry import Retry

from remedy_devenv.services import (
    AlertmanagerServer,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    free_port,
)

pytestmark = pytest.mark.services
# The async fixtures run on the session loop (pyproject), so the async tests must too.
session_loop = pytest.mark.asyncio(loop_scope="session")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def test_redis_set_get_with_password(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.set("remedy:test", "ok")
    assert client.get("remedy:test") == b"ok"
    # redis-py 8 retries an AuthenticationError with backoff (~4s) unless retry is disabled
    anonymous = redis.Redis(host=redis_server.host, port=redis_server.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("remedy:test")


def test_postgres_password_auth_and_pg_stat_activity(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t VALUES (1, 'a') ON CONFLICT DO NOTHING")
        assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("a",)

        errors: list[BaseException] = []

        def sleeper() -> None:
            try:
                with psycopg.connect(postgres_server.dsn, autocommit=True) as other:
                    other.execute("select pg_sleep(5)")
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
                errors.append(e)

        thread = threading.Thread(target=sleeper)
        thread.start()
        row: tuple[Any, ...] | None = None

        def seen() -> bool:
            nonlocal row
            row = conn.execute(
                "SELECT pid, state, usename FROM pg_stat_activity "
                "WHERE query = 'select pg_sleep(5)' AND pid <> pg_backend_pid()"
            ).fetchone()
            return row is not None and row[1] == "active"

        wait_for(seen, 5, "the pg_sleep session in pg_stat_activity")
        assert row is not None and row[2] == "remedy"
        assert conn.execute("SELECT pg_cancel_backend(%s)", (row[0],)).fetchone() == (True,)
        thread.join(10)
        assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.QueryCanceled)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.dsn_for("remedy", "wrong"), connect_timeout=5)


def test_postgres_non_superuser_role(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_role("app_user", "s3cret pass")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user").fetchone() == (
            "app_user",
            False,
        )
        conn.execute("CREATE TABLE IF NOT EXISTS owned_by_app_user (id int)")


class Receiver:
    """A tiny Alertmanager webhook receiver (aiohttp) that queues what it gets."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await self.received.put((request.headers.get("Authorization"), await request.json()))
        return web.Response(text="ok")

    async def next_matching(self, alertname: str, status: str, timeout: float) -> tuple[str | None, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                auth, payload = await self.received.get()
                names = {a["labels"].get("alertname") for a in payload["alerts"]}
                if alertname in names and payload["status"] == status:
                    return auth, payload


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/alertmanager", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/alertmanager"
    yield rec
    await runner.cleanup()


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[Path, str]:
    token = "test-token-" + str(time.time_ns())
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path, token


@session_loop
async def test_alertmanager_webhook_bearer_and_resolved(
    alertmanager_server: AlertmanagerServer, receiver: Receiver, token_file: tuple[Path, str]
) -> None:
    alertmanager_server.configure(webhook_url=receiver.url, token_file=token_file[0])
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "RemedyDirectAlert", "severity": "page"},
        "annotations": {"summary": "posted by the test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(seconds=3)).isoformat(),
    }
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _post_json, f"{alertmanager_server.url}/api/v2/alerts", [alert])

    auth, payload = await receiver.next_matching("RemedyDirectAlert", "firing", 20)
    assert auth == f"Bearer {token_file[1]}"
    assert payload["version"] == "4"
    assert payload["receiver"] == "remedy"
    assert payload["alerts"][0]["annotations"]["summary"] == "posted by the test"

    auth, payload = await receiver.next_matching("RemedyDirectAlert", "resolved", 20)
    assert auth == f"Bearer {token_file[1]}"
    assert payload["alerts"][0]["status"] == "resolved"


RULE = """
groups:
  - name: remedy-test
    rules:
      - alert: RemedyTestValueHigh
        expr: remedy_test_value > 10
        for: 0s
        labels: {severity: page}
        annotations: {summary: "value is {{ $value }}"}
"""


@session_loop
async def test_prometheus_scrape_rule_alertmanager_webhook(
    prometheus_server: PrometheusServer,
    alertmanager_server: AlertmanagerServer,
    receiver: Receiver,
    token_file: tuple[Path, str],
) -> None:
    registry = CollectorRegistry()
    Gauge("remedy_test_value", "A value the test controls", registry=registry).set(42)
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        alertmanager_server.configure(webhook_url=receiver.url, token_file=token_file[0])
        prometheus_server.configure(
            scrape_configs=[("app", [f"127.0.0.1:{port}"])],
            rules=[RULE],
            alertmanager_url=alertmanager_server.url,
        )
        loop = asyncio.get_running_loop()

        def scraped() -> bool:
            result = prometheus_server.query('remedy_test_value{job="app"}')
            return bool(result) and result[0]["value"][1] == "42"

        await loop.run_in_executor(None, wait_for, scraped, 20, "the scrape of remedy_test_value")
        auth, payload = await receiver.next_matching("RemedyTestValueHigh", "firing", 30)
        assert auth == f"Bearer {token_file[1]}"
        assert payload["version"] == "4"
        (alert,) = [a for a in payload["alerts"] if a["labels"]["alertname"] == "RemedyTestValueHigh"]
        assert alert["labels"]["job"] == "app" and alert["labels"]["severity"] == "page"
        assert alert["annotations"]["summary"] == "value is 42"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert any(a["labels"]["alertname"] == "RemedyTestValueHigh" for a in alertmanager_server.alerts())
    finally:
        prometheus_server.configure(rules=[], scrape_configs=[])
        httpd.shutdown()
        thread.join(5)


def _post_json(url: str, body: object) -> None:
    import urllib.request

    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
