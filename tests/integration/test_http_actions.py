"""resetCircuitBreaker, httpRequest and notify against real loopback HTTP servers.

The demo services (remedy_devenv.demoapp) stand in for runbooks 001-003's gateway, payments
and reconcile cron; their /admin/stats counters prove how many times a side effect was
requested. A tiny local app covers what the demo cannot do on purpose: echo the token back,
answer 500, hang past the timeout, and receive notifications.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from remedy.actions.base import CannotTell, NotApplied
from remedy.actions.circuit_breaker import RESET_CIRCUIT_BREAKER, normalize_state, state_of
from remedy.actions.http import HTTP_REQUEST, NOTIFY
from remedy.base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    PermanentError,
    RetryableError,
    SecretRefError,
    SkipError,
)
from remedy_devenv.demoapp import DEFAULT_ADMIN_TOKEN, free_port, runner_port, start_demo_service
from tests.fixtures.actions import make_ctx, run_action

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN = {"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"}
CRON_SECRET = "cron-s3cret-value-7f3a"
ADMIN_REF = ("gateway-admin", "token")
CRON_REF = ("cron-secret", "CRON_SECRET")
FORCE_ROUTE = "POST /admin/breakers/{name}/force"
Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """start(role, **opts) -> base URL of a demo service, cleaned up after the test."""
    runners: list[web.AppRunner] = []

    async def _start(role: str, **opts: Any) -> str:
        runner = await start_demo_service(role, 0, **opts)
        runners.append(runner)
        return f"http://127.0.0.1:{runner_port(runner)}"

    yield _start
    for r in reversed(runners):
        await r.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local app: /hook records requests, /echo echoes the Authorization header, /boom
    answers 500, /slow hangs; returns (base URL, recorded requests)."""
    seen: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "headers": dict(request.headers), "body": await request.text()})
        return web.Response(text="ok")

    async def echo(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "headers": dict(request.headers)})
        # A careless server that reflects the credential: the excerpt must not carry it.
        return web.Response(status=403, text=f"denied for {request.headers.get('Authorization')}; try again")

    async def boom(request: web.Request) -> web.Response:
        seen.append({"method": request.method})
        return web.Response(status=500, text="internal error")

    async def slow(request: web.Request) -> web.Response:
        seen.append({"method": request.method})
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/hook", hook)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/boom", boom)
    app.router.add_route("*", "/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner_port(runner)}", seen
    await runner.cleanup()


async def stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/admin/stats") as r:
        return dict(await r.json())


async def trip(http: aiohttp.ClientSession, gw: str) -> None:
    async with http.post(f"{gw}/admin/breakers/payments/trip", headers=ADMIN) as r:
        assert r.status == 200


def breaker_params(gw: str, pay: str, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "statusUrl": f"{gw}/status/breakers",
        "breaker": "payments",
        "upstreamHealth": {"url": f"{pay}/health", "consecutive": 3, "interval": "20ms", "timeout": "2s"},
        "reset": {
            "url": f"{gw}/admin/breakers/payments/force", "method": "POST",
            "bearerTokenSecretRef": {"name": ADMIN_REF[0], "key": ADMIN_REF[1]},
            "body": json.dumps({"state": "HALF_OPEN"}), "expectStatus": [200],
        },
        "verifyTimeout": "5s",
    }
    params.update(overrides)
    return params


def admin_ctx() -> Any:
    return make_ctx({ADMIN_REF: DEFAULT_ADMIN_TOKEN})


# --- resetCircuitBreaker ----------------------------------------------------------------


async def test_healthy_upstream_breaker_forced_half_open_and_verified(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    await trip(http, gw)

    plan, result = await run_action(RESET_CIRCUIT_BREAKER, admin_ctx(), breaker_params(gw, pay))

    assert plan["stateBefore"] == "OPEN"
    assert [c["ok"] for c in plan["health"]["checks"]] == [True, True, True]
    assert plan["request"]["method"] == "POST" and plan["request"]["url"].endswith("/payments/force")
    assert "POST" in plan["change"] and "3/3 health checks passed" in plan["change"]
    assert result is not None and result["sent"] is True and result["status"] == 200
    assert result["verification"]["state"] in ("HALF_OPEN", "CLOSED")
    s = await stats(http, gw)
    assert s["forced"] == [{"name": "payments", "from": "OPEN", "to": "HALF_OPEN"}]
    assert s["succeeded"][FORCE_ROUTE] == 1
    # the gateway's own probe then closes it, as runbook 002 says (HALF-OPEN -> CLOSED)
    for _ in range(100):
        if s["breakers"]["payments"] == "CLOSED":
            break
        await asyncio.sleep(0.05)
        s = await stats(http, gw)
    assert s["breakers"]["payments"] == "CLOSED"
    assert DEFAULT_ADMIN_TOKEN not in json.dumps([plan, result])


async def test_unhealthy_upstream_skips_and_sends_nothing(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    await trip(http, gw)
    async with http.post(f"{pay}/admin/down") as r:
        assert r.status == 200

    with pytest.raises(SkipError) as exc:
        await run_action(RESET_CIRCUIT_BREAKER, admin_ctx(), breaker_params(gw, pay))

    assert exc.value.reason == "UpstreamUnhealthy"
    checks = exc.value.evidence["checks"]
    assert isinstance(checks, list) and checks[-1]["ok"] is False and checks[-1]["status"] == 503
    assert exc.value.evidence["sent"] is False
    s = await stats(http, gw)
    assert FORCE_ROUTE not in s["received"] and s["forced"] == []
    assert s["breakers"]["payments"] == "OPEN"


async def test_upstream_unreachable_counts_as_unhealthy(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    await trip(http, gw)
    dead = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(SkipError) as exc:
        await run_action(RESET_CIRCUIT_BREAKER, admin_ctx(), breaker_params(gw, dead))

    assert exc.value.reason == "UpstreamUnhealthy"
    assert "error" in exc.value.evidence["checks"][0]  # type: ignore[index]
    assert FORCE_ROUTE not in (await stats(http, gw))["received"]


async def test_upstream_goes_down_between_plan_and_execute(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    await trip(http, gw)
    ctx = admin_ctx()
    params = RESET_CIRCUIT_BREAKER.params.model_validate(breaker_params(gw, pay))
    plan = await RESET_CIRCUIT_BREAKER.plan(ctx, params)
    async with http.post(f"{pay}/admin/down") as r:
        assert r.status == 200

    with pytest.raises(SkipError) as exc:
        await RESET_CIRCUIT_BREAKER.execute(ctx, params, plan)

    assert exc.value.reason == "UpstreamUnhealthy" and "right before sending" in exc.value.message
    assert FORCE_ROUTE not in (await stats(http, gw))["received"]


async def test_breaker_already_closed_is_skipped(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)

    with pytest.raises(SkipError) as exc:
        await run_action(RESET_CIRCUIT_BREAKER, admin_ctx(), breaker_params(gw, pay))

    assert exc.value.reason == "BreakerNotOpen"
    assert exc.value.evidence["state"] == "CLOSED"
    assert FORCE_ROUTE not in (await stats(http, gw))["received"]


async def test_breaker_not_reset_within_verify_timeout(start: Start, http: aiohttp.ClientSession) -> None:
    """The force is accepted but asks for a state outside expectState: verification fails."""
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    await trip(http, gw)
    params = breaker_params(gw, pay, verifyTimeout="300ms", expectState=["CLOSED"])
    params["reset"]["body"] = json.dumps({"state": "OPEN"})

    with pytest.raises(PermanentError) as exc:
        await run_action(RESET_CIRCUIT_BREAKER, admin_ctx(), params)

    assert exc.value.reason == "BreakerNotReset"


async def test_unknown_breaker_and_missing_secret(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    await trip(http, gw)
    with pytest.raises(PermanentError) as exc:
        await run_action(RESET_CIRCUIT_BREAKER, admin_ctx(), breaker_params(gw, pay, breaker="nope"))
    assert exc.value.reason == "TargetNotFound" and "payments" in exc.value.message
    with pytest.raises(SecretRefError):
        await run_action(RESET_CIRCUIT_BREAKER, make_ctx(), breaker_params(gw, pay), dry_run=True)
    assert FORCE_ROUTE not in (await stats(http, gw))["received"]


async def test_state_parsing() -> None:
    assert state_of({"payments": {"state": "OPEN"}}, "payments", "state") == "OPEN"
    assert state_of({"payments": "half-open"}, "payments", "state") == "HALF_OPEN"
    assert state_of({"payments": 0.5}, "payments", "state") == "HALF_OPEN"
    assert state_of({"payments": {"breaker_state": 1}}, "payments", "breaker_state") == "OPEN"
    assert state_of({"payments": {"status": {"state": "closed"}}}, "payments", "status.state") == "CLOSED"
    assert normalize_state("0") == "CLOSED"
    with pytest.raises(ValueError):
        normalize_state(True)
    with pytest.raises(ValueError):
        normalize_state(0.7)
    with pytest.raises(KeyError):
        state_of({"inventory": "OPEN"}, "payments", "state")


# --- httpRequest ------------------------------------------------------------------------


def reconcile_params(base: str, **overrides: Any) -> dict[str, Any]:
    return {"url": f"{base}/api/cron/reconcile", "method": "POST",
            "bearerTokenSecretRef": {"name": CRON_REF[0], "key": CRON_REF[1]}, **overrides}


async def test_reconcile_called_exactly_once_with_bearer(start: Start, http: aiohttp.ClientSession) -> None:
    rec = await start("reconcile", token=CRON_SECRET)
    async with http.post(f"{rec}/admin/reservations/stick", json={"count": 60}) as r:
        assert r.status == 200

    plan, result = await run_action(HTTP_REQUEST, make_ctx({CRON_REF: CRON_SECRET}), reconcile_params(rec))

    assert plan["change"].startswith(f"POST {rec}/api/cron/reconcile with Bearer token from Secret default/cron-secret")
    assert result is not None and result["status"] == 200
    assert json.loads(result["bodyExcerpt"]) == {"reconciled": 60}
    s = await stats(http, rec)
    assert s["received"]["POST /api/cron/reconcile"] == 1 and s["succeeded"]["POST /api/cron/reconcile"] == 1
    assert s["stuck_reservations"] == 0
    assert CRON_SECRET not in json.dumps([plan, result])


async def test_idempotency_key_makes_a_repeat_harmless_at_the_service(start: Start, http: aiohttp.ClientSession) -> None:
    """Issue 12: the key is derived from the Remediation uid, so a repeat of the same recorded
    request (after a lost response or an operator restart) is answered from the service's
    record and runs nothing; the service's own counters are the witness."""
    rec = await start("reconcile", token=CRON_SECRET)
    ctx = make_ctx({CRON_REF: CRON_SECRET})
    await client_post(http, f"{rec}/admin/reservations/stick", {"count": 7})
    plan, first = await run_action(HTTP_REQUEST, ctx, reconcile_params(rec))
    assert plan["idempotencyKey"] == f"remedy-{ctx.uid}"
    observed = await HTTP_REQUEST.observe(ctx, HTTP_REQUEST.params.model_validate(reconcile_params(rec)), plan)  # type: ignore[misc]
    assert isinstance(observed, NotApplied)  # keyed: re-sending the recorded request is safe
    await client_post(http, f"{rec}/admin/reservations/stick", {"count": 5})
    _, again = await run_action(HTTP_REQUEST, ctx, reconcile_params(rec))  # same uid: same key
    s = await stats(http, rec)
    assert s["reconcile_runs"] == 1 and s["replayed"]["POST /api/cron/reconcile"] == 1
    assert s["succeeded"]["POST /api/cron/reconcile"] == 1
    assert first is not None and again is not None and again["bodyExcerpt"] == first["bodyExcerpt"]
    assert s["stuck_reservations"] == 5  # the second batch was not reconciled by the repeat

    # Declared without idempotency support: no header, a repeat runs again, observe cannot tell.
    unkeyed = reconcile_params(rec, idempotencyKey=False)
    plan2, _ = await run_action(HTTP_REQUEST, ctx, unkeyed)
    await run_action(HTTP_REQUEST, ctx, unkeyed)
    assert plan2["idempotencyKey"] is None
    assert (await stats(http, rec))["reconcile_runs"] == 3
    observed = await HTTP_REQUEST.observe(ctx, HTTP_REQUEST.params.model_validate(unkeyed), plan2)  # type: ignore[misc]
    assert isinstance(observed, CannotTell)


async def client_post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as r:
        assert r.status == 200, await r.text()


async def test_wrong_token_is_forbidden_and_message_names_secret_not_value(start: Start, http: aiohttp.ClientSession) -> None:
    rec = await start("reconcile", token=CRON_SECRET)
    wrong = "wrong-token-9c1e"

    with pytest.raises(ForbiddenError) as exc:
        await run_action(HTTP_REQUEST, make_ctx({CRON_REF: wrong}), reconcile_params(rec))

    assert "401" in exc.value.message and "Secret default/cron-secret key CRON_SECRET" in exc.value.message
    assert wrong not in exc.value.message and wrong not in str(exc.value)
    s = await stats(http, rec)
    assert s["received"]["POST /api/cron/reconcile"] == 1 and "POST /api/cron/reconcile" not in s["succeeded"]


async def test_reflected_token_is_redacted(receiver: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = receiver
    token = "reflected-t0ken-value"
    with pytest.raises(ForbiddenError) as exc:
        await run_action(HTTP_REQUEST, make_ctx({CRON_REF: token}), reconcile_params(base, url=f"{base}/echo"))
    assert token not in exc.value.message and "<redacted>" in exc.value.message
    assert seen[0]["headers"]["Authorization"] == f"Bearer {token}"
    # accepted status: the excerpt in evidence is redacted too
    _, result = await run_action(HTTP_REQUEST, make_ctx({CRON_REF: token}),
                                 reconcile_params(base, url=f"{base}/echo", expectStatus=[403]))
    assert result is not None and token not in json.dumps(result) and "<redacted>" in result["bodyExcerpt"]


async def test_delete_chaos_config(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    async with http.put(f"{pay}/chaos/config", json={"error_rate": 1, "latency_ms": 10}) as r:
        assert r.status == 200

    plan, result = await run_action(HTTP_REQUEST, make_ctx(), {"url": f"{pay}/chaos/config", "method": "DELETE",
                                                                 "expectStatus": [200]})

    assert plan["change"] == f"DELETE {pay}/chaos/config" and plan["auth"] is None
    assert result is not None and result["status"] == 200
    assert '"cleared": ["error_rate", "latency_ms"]' in result["bodyExcerpt"]
    async with http.get(f"{pay}/chaos/config") as r:
        assert (await r.json())["enabled"] is False
    async with http.get(f"{pay}/health") as r:
        assert r.status == 200
    assert (await stats(http, pay))["succeeded"]["DELETE /chaos/config"] == 1


async def test_send_failures_map_to_retry_intent(receiver: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = receiver
    ctx = make_ctx()
    # nothing listening: nothing was sent, so retrying is safe
    with pytest.raises(RetryableError) as retry:
        await run_action(HTTP_REQUEST, ctx, {"url": f"http://127.0.0.1:{free_port()}/x"})
    assert retry.value.reason == "Unreachable"
    # 5xx after the server saw it: ambiguous (the engine observes; it never re-plans)
    with pytest.raises(AmbiguousOutcomeError) as upstream:
        await run_action(HTTP_REQUEST, ctx, {"url": f"{base}/boom"})
    assert upstream.value.reason == "UpstreamError"
    # timeout after sending: outcome unknown
    with pytest.raises(AmbiguousOutcomeError) as unknown:
        await run_action(HTTP_REQUEST, ctx, {"url": f"{base}/slow", "timeout": "300ms"})
    assert unknown.value.reason == "OutcomeUnknown"
    # other 4xx
    with pytest.raises(PermanentError) as missing:
        await run_action(HTTP_REQUEST, ctx, {"url": f"{base}/nothing-here", "method": "GET"})
    assert missing.value.reason == "UnexpectedStatus"
    assert [s["method"] for s in seen] == ["POST", "POST"]  # /boom and /slow, each exactly once


async def test_authorization_header_conflict_and_masking(receiver: tuple[str, list[dict[str, Any]]]) -> None:
    base, _ = receiver
    with pytest.raises(InvalidSpecError):
        await run_action(HTTP_REQUEST, make_ctx({CRON_REF: "x"}),
                         reconcile_params(base, headers={"authorization": "Bearer y"}), dry_run=True)
    plan, _ = await run_action(HTTP_REQUEST, make_ctx(), {"url": f"{base}/hook", "headers": {
        "X-Api-Key": "plain-key", "X-Request-Source": "remedy"}}, dry_run=True)
    assert plan["headers"] == {"X-Api-Key": "<redacted>", "X-Request-Source": "remedy"}


# --- notify -----------------------------------------------------------------------------


async def test_notify_posts_slack_compatible_json(receiver: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = receiver
    token = "hook-token-55"
    params = {"message": "payments breaker reset by remedy", "severity": "critical",
              "webhook": {"url": f"{base}/hook", "bearerTokenSecretRef": {"name": "hook", "key": "token"}}}

    plan, result = await run_action(NOTIFY, make_ctx({("hook", "token"): token}), params)

    assert len(seen) == 1
    assert json.loads(seen[0]["body"]) == {"text": "payments breaker reset by remedy", "severity": "critical"}
    assert seen[0]["headers"]["Content-Type"] == "application/json"
    assert seen[0]["headers"]["Authorization"] == f"Bearer {token}"
    assert result is not None and result["message"] == params["message"] and result["severity"] == "critical"
    assert result["webhook"]["status"] == 200
    assert token not in json.dumps([plan, result])


async def test_notify_without_webhook_is_evidence_only() -> None:
    plan, result = await run_action(NOTIFY, make_ctx(), {"message": "stuck reservations reconciled"})
    assert result == {"message": "stuck reservations reconciled", "severity": "warning",
                      "summary": "[warning] stuck reservations reconciled"}
    assert plan["webhook"] is None


async def test_notify_webhook_failure_fails(receiver: tuple[str, list[dict[str, Any]]]) -> None:
    base, _ = receiver
    with pytest.raises(AmbiguousOutcomeError) as exc:
        await run_action(NOTIFY, make_ctx(), {"message": "m", "webhook": {"url": f"{base}/boom"}})
    assert exc.value.reason == "UpstreamError"
    with pytest.raises(InvalidSpecError):
        await run_action(NOTIFY, make_ctx(), {"message": "m", "webhook": {"url": f"{base}/hook", "body": "{}"}})


# --- docs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resetCircuitBreaker", "httpRequest", "notify"])
async def test_doc_examples_are_valid(name: str) -> None:
    import yaml

    from remedy.api.remediation import RemediationSpec

    docs = Path(__file__).resolve().parents[2] / "docs" / "examples" / f"{name}.yaml"
    remediations = [d for d in yaml.safe_load_all(docs.read_text()) if d["kind"] == "Remediation"]
    assert remediations
    for d in remediations:
        assert RemediationSpec.model_validate(d["spec"]).action.only()[0] == name
