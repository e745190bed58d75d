"""resetCircuitBreaker (runbook 001): read the breaker's state, require the dependency healthy,
reset it, and confirm it stays closed.

Why a module apart from http.py: the breaker's state reading and health series are its own
logic; the sending rules (retry intent, Idempotency-Key, redaction) are http.py's and are used
from there unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable

import aiohttp

from ..api.common import parse_duration
from ..api.http import HealthCheck, ResetCircuitBreaker
from ..base.errors import (
    PermanentError,
    RetryableError,
    SkipError,
    TargetNotFoundError,
)
from .base import ActionContext, ActionDef, Applied, CannotTell, Evidence, NotApplied, Observation
from .http import (
    check_headers,
    check_status,
    describe,
    request_plan,
    response_evidence,
    send,
    short_error,
    token_for,
)

_NUMERIC_STATES = {0.0: "CLOSED", 1.0: "OPEN", 0.5: "HALF_OPEN"}
_VERIFY_POLL_S = 0.5


def normalize_state(value: object) -> str:
    """CLOSED/OPEN/HALF_OPEN from a state string, "half-open", or a breaker_state gauge value."""
    if isinstance(value, bool):  # bool is an int: True must not read as OPEN
        raise ValueError(f"breaker state {value!r} is a boolean")
    if isinstance(value, (int, float)):
        if float(value) in _NUMERIC_STATES:
            return _NUMERIC_STATES[float(value)]
        raise ValueError(f"numeric breaker state {value!r} is not 0, 0.5 or 1")
    if isinstance(value, str):
        try:
            return normalize_state(float(value))
        except ValueError:
            pass
        text = re.sub(r"[-\s]+", "_", value.strip().upper())
        return "HALF_OPEN" if text == "HALFOPEN" else text
    raise ValueError(f"breaker state {value!r} is not a string or number")


def state_of(doc: object, breaker: str, state_field: str) -> str:
    """doc[breaker][stateField] (dotted fields descend), or doc[breaker] itself when it is the state."""
    if not isinstance(doc, dict):
        raise ValueError("status document is not a JSON object")
    if breaker not in doc:
        raise KeyError(breaker)
    entry: object = doc[breaker]
    if isinstance(entry, dict):
        for part in state_field.split("."):
            if not isinstance(entry, dict) or part not in entry:
                raise ValueError(f"breaker entry has no field {state_field!r}")
            entry = entry[part]
    return normalize_state(entry)


async def read_breaker_state(ctx: ActionContext, p: ResetCircuitBreaker) -> str:
    """A read: every transient failure is retryable; a malformed answer is not."""
    url = p.status_url
    try:
        # The status endpoint normally lives on the same service as the reset call, so it
        # shares that call's timeout. No token is sent: it may be a different host.
        async with ctx.connectors.http(parse_duration(p.reset.timeout)) as session, session.get(url) as resp:
            status = int(resp.status)
            text = (await resp.content.read(4 * 1024 * 1024)).decode("utf-8", errors="replace")
    except aiohttp.ClientSSLError as exc:
        raise PermanentError(f"GET {url}: TLS failed ({type(exc).__name__})", reason="TLSError") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise RetryableError(f"GET {url}: {short_error(exc)}", reason="StatusUnavailable") from None
    if status >= 500:
        raise RetryableError(f"GET {url} answered {status}", reason="StatusUnavailable")
    if not 200 <= status < 300:
        raise PermanentError(f"GET {url} answered {status}; check statusUrl", reason="StatusUnavailable")
    try:
        doc = json.loads(text)
        return state_of(doc, p.breaker, p.state_field)
    except KeyError:
        names = sorted(doc)[:20] if isinstance(doc, dict) else []
        raise TargetNotFoundError(f"breaker {p.breaker!r} not in {url} (found: {', '.join(map(str, names))})") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise PermanentError(f"GET {url}: {exc}", reason="BadStatusDocument") from None


async def probe(ctx: ActionContext, hc: HealthCheck) -> Evidence:
    """One health check; a 2xx passes. A fresh session each time so a pooled keep-alive
    connection cannot hide an upstream that no longer accepts new ones."""
    started = time.monotonic()
    try:
        async with ctx.connectors.http(parse_duration(hc.timeout)) as session, session.get(hc.url) as resp:
            status = int(resp.status)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return {"ok": False, "error": short_error(exc), "ms": int((time.monotonic() - started) * 1000)}
    return {"ok": 200 <= status < 300, "status": status, "ms": int((time.monotonic() - started) * 1000)}


async def health_series(ctx: ActionContext, hc: HealthCheck, times: int) -> tuple[bool, list[Evidence]]:
    """``times`` passes in a row, ``interval`` apart; stops at the first failure."""
    checks: list[Evidence] = []
    for n in range(1, times + 1):
        if n > 1:
            await asyncio.sleep(parse_duration(hc.interval))
        check = {"n": n, **await probe(ctx, hc)}
        checks.append(check)
        if not check["ok"]:
            return False, checks
    return True, checks


def _unhealthy(p: ResetCircuitBreaker, checks: list[Evidence], when: str) -> SkipError:
    passed = sum(1 for c in checks if c["ok"])
    return SkipError(
        f"upstream {p.upstream_health.url} failed a health check {when} ({passed} passed before it, "
        f"{p.upstream_health.consecutive} in a row required); breaker {p.breaker} left alone, nothing sent",
        reason="UpstreamUnhealthy",
        evidence={"breaker": p.breaker, "healthUrl": p.upstream_health.url, "checks": checks, "sent": False},
    )


def _states(values: Iterable[str]) -> list[str]:
    return [normalize_state(v) for v in values]


async def breaker_plan(ctx: ActionContext, p: ResetCircuitBreaker) -> Evidence:
    state = await read_breaker_state(ctx, p)
    only_when = _states(p.only_when_state)
    if state not in only_when:
        raise SkipError(
            f"breaker {p.breaker} is {state}, not one of {only_when}; nothing to reset",
            reason="BreakerNotOpen", evidence={"breaker": p.breaker, "state": state, "onlyWhenState": only_when},
        )
    # runbook 002: "Do NOT manually close unless you verify provider is healthy".
    healthy, checks = await health_series(ctx, p.upstream_health, p.upstream_health.consecutive)
    if not healthy:
        raise _unhealthy(p, checks, "during planning")
    check_headers(p.reset)
    await token_for(ctx, p.reset)  # a missing Secret fails now, before intent is recorded
    expect = _states(p.expect_state)
    return {
        "breaker": p.breaker, "statusUrl": p.status_url, "stateBefore": state, "expectState": expect,
        "health": {"url": p.upstream_health.url, "required": p.upstream_health.consecutive, "checks": checks},
        "request": request_plan(ctx, p.reset, p.reset.body),
        "change": (f"{describe(p.reset)} to move breaker {p.breaker} {state} -> {'/'.join(expect)} "
                   f"({p.upstream_health.consecutive}/{p.upstream_health.consecutive} health checks passed)"),
    }


async def breaker_execute(ctx: ActionContext, p: ResetCircuitBreaker, plan: Evidence) -> Evidence:
    # The world may have moved since plan (an approval wait, an operator restart): look again.
    state = await read_breaker_state(ctx, p)
    if state not in _states(p.only_when_state):
        if state in _states(p.expect_state):
            # Already reset (by itself, or by our own attempt before a restart): forcing it
            # again could only move a CLOSED breaker back to HALF_OPEN.
            return {"breaker": p.breaker, "stateBefore": state, "sent": False,
                    "summary": f"breaker {p.breaker} already {state}; nothing sent"}
        raise SkipError(f"breaker {p.breaker} is now {state}; nothing sent", reason="BreakerNotOpen",
                        evidence={"breaker": p.breaker, "state": state, "sent": False})
    healthy, checks = await health_series(ctx, p.upstream_health, 1)
    if not healthy:
        raise _unhealthy(p, checks, "right before sending")
    token = await token_for(ctx, p.reset)
    resp = await send(ctx, p.reset, token=token, body=p.reset.body)
    check_status(ctx, p.reset, resp)
    return {
        "breaker": p.breaker, "stateBefore": state, "sent": True, "healthRecheck": checks[0],
        **response_evidence(p.reset, resp),
        "summary": f"{describe(p.reset)} -> {resp.status}: breaker {p.breaker} was {state}",
    }


async def breaker_verify(ctx: ActionContext, p: ResetCircuitBreaker, plan: Evidence, result: Evidence) -> Evidence:
    expect = _states(p.expect_state)
    limit = parse_duration(p.verify_timeout)
    loop = asyncio.get_running_loop()
    start = loop.time()
    last = "unknown"
    while True:
        try:
            last = await read_breaker_state(ctx, p)
        except RetryableError as exc:
            last = f"unreadable ({exc.message})"
        elapsed = loop.time() - start
        if last in expect:
            return {"breaker": p.breaker, "state": last, "afterSeconds": round(elapsed, 2)}
        if elapsed >= limit:
            raise PermanentError(f"breaker {p.breaker} is {last}, not one of {expect}, {p.verify_timeout} after the reset",
                                 reason="BreakerNotReset")
        await asyncio.sleep(min(_VERIFY_POLL_S, max(0.0, limit - elapsed)))


async def breaker_observe(ctx: ActionContext, p: ResetCircuitBreaker, plan: Evidence) -> Observation:
    state = await read_breaker_state(ctx, p)
    if state in _states(p.expect_state):
        return Applied(f"breaker {p.breaker} is {state}")
    if state in _states(p.only_when_state):
        # execute re-reads the state and the health first, so re-running the plan is safe.
        return NotApplied(f"breaker {p.breaker} is still {state}")
    return CannotTell(f"breaker {p.breaker} is {state}: neither reset nor in {list(p.only_when_state)}")


RESET_CIRCUIT_BREAKER = ActionDef(
    name="resetCircuitBreaker", params=ResetCircuitBreaker, target=lambda p: f"CircuitBreaker/{p.breaker}",
    plan=breaker_plan, execute=breaker_execute, verify=breaker_verify, observe=breaker_observe,
    idempotent=True,  # forcing HALF_OPEN twice is harmless, and execute re-reads state first
    destructive=False,
)

