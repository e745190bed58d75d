"""HTTP actions (runbooks 001-003): reset a circuit breaker, call one webhook, notify.

Why a module of its own: these three share one hard rule set about *sending* a request, and
it must be applied identically everywhere:

- Retry intent follows what the server may have seen. Only a failure before any byte was
  sent (connection refused, DNS, connect timeout) is a RetryableError; a timeout, a dropped
  connection or a 5xx after sending may have run the side effect, so it is an
  AmbiguousOutcomeError (reason OutcomeUnknown / UpstreamError) and the engine asks ``observe``.
- Effectively once: every request carries ``Idempotency-Key: remedy-<Remediation uid>``, the
  same on every attempt and after operator restarts, unless the call says
  ``idempotencyKey: false``. ``observe`` answers NotApplied for keyed calls (a re-send with the
  same key cannot act twice at a service that honours the header, so the engine re-sends the
  recorded request) and CannotTell for unkeyed ones (the Remediation ends OutcomeUnknown with
  an escalation; it is never sent twice).
- Bearer tokens come from a Secret and never reach plan, evidence or messages: response
  excerpts are redacted, header values that look like credentials are masked, and errors
  name the Secret, not its value.
- Redirects are never followed, neither when sending nor when reading a breaker's state or
  probing health (the egress session forces it; ``clients/egress.py``): a redirect would replay
  the bearer token to whatever the Location names, skip the allowlist check for the second
  address, and may change the method. A 3xx that was not asked for in ``expectStatus`` ends the
  Remediation Failed/RedirectRefused naming the Location, so the runbook can list the final URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from .. import redaction
from ..api.common import SecretKeyRef, parse_duration
from ..api.http import HealthCheck, HttpCall, HttpRequest, Notify, ResetCircuitBreaker
from ..clients.egress import redirect_location
from ..errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    PermanentError,
    RetryableError,
    SkipError,
    TargetNotFoundError,
)
from . import notify_sinks
from .base import ActionContext, ActionDef, Applied, CannotTell, Evidence, NotApplied, Observation

EXCERPT_CHARS = 200
# Read a little more than the excerpt so a token straddling the cut is still redacted whole.
READ_LIMIT = 64 * 1024
REDACTED = "<redacted>"
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|passw|api-?key|cookie|signature", re.IGNORECASE)
_NUMERIC_STATES = {0.0: "CLOSED", 1.0: "OPEN", 0.5: "HALF_OPEN"}
_VERIFY_POLL_S = 0.5
# Connect timeouts mean nothing was sent; aiohttp < 3.10 has no distinct class for them.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError, *([aiohttp.ConnectionTimeoutError] if hasattr(aiohttp, "ConnectionTimeoutError") else []),
)


# --- sending one request ----------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    excerpt: str
    ms: int
    location: str | None = None  # where a 3xx pointed; never followed


REDIRECT_REFUSED = "RedirectRefused"


def redirect_refused(what: str, status: int, location: str) -> PermanentError:
    return PermanentError(
        f"{what} answered {status} redirecting to {redaction.redact(location)!r}; remedy does not follow redirects "
        "(the next hop would bypass the egress allowlist and receive the request's credentials): use the final URL",
        reason=REDIRECT_REFUSED)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    # Every encoding of every Secret value read so far (remedy.redaction), before the excerpt
    # is cut or quoted: a cut or a repr() would otherwise leave fragments no later pass knows.
    return redaction.redact(text)


def excerpt(text: str, secrets: Iterable[str | None]) -> str:
    # Redact before cutting: cutting first could leave a token prefix behind.
    return redact(text, secrets)[:EXCERPT_CHARS]


def describe(call: HttpCall) -> str:
    return f"{call.method} {call.url}"


def _auth_text(ctx: ActionContext, ref: SecretKeyRef | None) -> str | None:
    return None if ref is None else f"Bearer token from Secret {ctx.namespace}/{ref.name} key {ref.key}"


def shown_headers(call: HttpCall) -> dict[str, str]:
    """Headers as plan/evidence may show them: credential-looking values masked.

    The model says plain headers hold no secrets, but users paste tokens anyway; masking by
    name costs nothing and keeps status.plan safe to share in an incident channel.
    """
    return {k: (REDACTED if _SENSITIVE_HEADER.search(k) else v) for k, v in sorted(call.headers.items())}


def idempotency_key(ctx: ActionContext, call: HttpCall) -> str | None:
    """Derived from the Remediation's uid: stable across attempts and operator restarts."""
    if not call.idempotency_key or any(k.lower() == "idempotency-key" for k in call.headers):
        return None
    return f"remedy-{ctx.uid}"


def request_plan(ctx: ActionContext, call: HttpCall, body: str | None) -> Evidence:
    """Exactly which request will be sent, without its token."""
    out: Evidence = {
        "method": call.method, "url": call.url, "headers": shown_headers(call),
        "auth": _auth_text(ctx, call.bearer_token_secret_ref),
        "expectStatus": list(call.expect_status), "timeout": call.timeout,
        "idempotencyKey": idempotency_key(ctx, call),
    }
    if body is not None:
        out["bodyBytes"] = len(body.encode())
        out["bodyExcerpt"] = body[:EXCERPT_CHARS]
    return out


def check_headers(call: HttpCall) -> None:
    if call.bearer_token_secret_ref is not None and any(k.lower() == "authorization" for k in call.headers):
        raise InvalidSpecError("set either headers.Authorization or bearerTokenSecretRef, not both")


def _headers(call: HttpCall, token: str | None, body: str | None, content_type: str | None,
             key: str | None = None) -> dict[str, str]:
    check_headers(call)
    headers = dict(call.headers)
    lower = {k.lower() for k in headers}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    if body is not None and "content-type" not in lower:
        headers["Content-Type"] = content_type or _guess_content_type(body)
    return headers


def _guess_content_type(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


async def token_for(ctx: ActionContext, call: HttpCall) -> str | None:
    return await ctx.optional_secret(call.bearer_token_secret_ref)


async def send(ctx: ActionContext, call: HttpCall, *, token: str | None, body: str | None = None,
               content_type: str | None = None) -> Response:
    """Send ``call`` once; map failures by whether the server may have seen the request."""
    what = describe(call)
    headers = _headers(call, token, body, content_type, idempotency_key(ctx, call))
    started = time.monotonic()
    try:
        async with ctx.connectors.http(parse_duration(call.timeout)) as session:  # noqa: SIM117 - the request spans lines; one with would be harder to read
            async with session.request(call.method, call.url, headers=headers,
                                       data=body.encode() if body is not None else None,
                                       allow_redirects=False) as resp:
                status = int(resp.status)
                location = redirect_location(status, resp.headers)
                try:
                    raw = await resp.content.read(READ_LIMIT)
                    text = _decode(raw, resp.charset)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # The status line arrived, so the outcome is known; only the body is lost.
                    text = f"<body unreadable: {type(exc).__name__}>"
    except aiohttp.ClientSSLError as exc:
        raise PermanentError(f"{what}: TLS failed ({type(exc).__name__}); nothing was sent", reason="TLSError") from None
    except _NOT_SENT as exc:
        # No connection was made, so no byte of the request left: safe to retry.
        raise RetryableError(f"{what}: cannot connect ({_short(exc)}); nothing was sent", reason="Unreachable") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise AmbiguousOutcomeError(
            f"{what}: {type(exc).__name__} after the request may have been received", reason="OutcomeUnknown",
        ) from None
    return Response(status=status, excerpt=excerpt(text, [token]), ms=int((time.monotonic() - started) * 1000),
                    location=location)


def check_status(ctx: ActionContext, call: HttpCall, resp: Response) -> None:
    if resp.status in call.expect_status:
        return
    if resp.location is not None:
        raise redirect_refused(describe(call), resp.status, resp.location)
    what = f"{describe(call)} answered {resp.status}"
    tail = f"; body: {resp.excerpt!r}" if resp.excerpt else ""
    if resp.status in (401, 403):
        ref = call.bearer_token_secret_ref
        hint = (f"check the token in Secret {ctx.namespace}/{ref.name} key {ref.key}" if ref
                else "no bearerTokenSecretRef is set")
        raise ForbiddenError(f"{what}: {hint}{tail}")
    if resp.status >= 500:
        raise AmbiguousOutcomeError(f"{what} (server error; the request may have been processed){tail}",
                                    reason="UpstreamError")
    raise PermanentError(f"{what}, expected one of {list(call.expect_status)}{tail}", reason="UnexpectedStatus")


def response_evidence(call: HttpCall, resp: Response) -> Evidence:
    return {"request": describe(call), "status": resp.status, "bodyExcerpt": resp.excerpt, "durationMs": resp.ms}


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a server-declared charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _host(url: str) -> str:
    return urlsplit(url).netloc


def observe_call(ctx: ActionContext, call: HttpCall) -> Observation:
    """An HTTP side effect cannot be read back; only the key makes a repeat safe."""
    key = idempotency_key(ctx, call)
    if key is not None:
        return NotApplied(f"{describe(call)} carries Idempotency-Key {key}: a re-send cannot act twice")
    return CannotTell(f"{describe(call)} is declared without idempotency support (idempotencyKey: false); "
                      "whether it ran cannot be observed and a re-send could act twice")


# --- resetCircuitBreaker ----------------------------------------------------------------


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
        async with ctx.connectors.http(parse_duration(p.reset.timeout)) as session, \
                session.get(url, allow_redirects=False) as resp:
            status = int(resp.status)
            location = redirect_location(status, resp.headers)
            text = (await resp.content.read(4 * 1024 * 1024)).decode("utf-8", errors="replace")
    except aiohttp.ClientSSLError as exc:
        raise PermanentError(f"GET {url}: TLS failed ({type(exc).__name__})", reason="TLSError") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise RetryableError(f"GET {url}: {_short(exc)}", reason="StatusUnavailable") from None
    if location is not None:
        raise redirect_refused(f"statusUrl GET {url}", status, location)
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
    connection cannot hide an upstream that no longer accepts new ones. A redirect is a
    misconfigured health URL, not an unhealthy upstream: it fails the Remediation."""
    started = time.monotonic()
    try:
        async with ctx.connectors.http(parse_duration(hc.timeout)) as session, \
                session.get(hc.url, allow_redirects=False) as resp:
            status = int(resp.status)
            location = redirect_location(status, resp.headers)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return {"ok": False, "error": _short(exc), "ms": int((time.monotonic() - started) * 1000)}
    if location is not None:
        raise redirect_refused(f"health check GET {hc.url}", status, location)
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


# --- httpRequest ------------------------------------------------------------------------


async def request_plan_action(ctx: ActionContext, p: HttpRequest) -> Evidence:
    check_headers(p)
    await token_for(ctx, p)  # a missing Secret fails at plan time, before intent is recorded
    auth = _auth_text(ctx, p.bearer_token_secret_ref)
    return {**request_plan(ctx, p, p.body), "change": describe(p) + (f" with {auth}" if auth else "")}


async def request_execute(ctx: ActionContext, p: HttpRequest, plan: Evidence) -> Evidence:
    token = await token_for(ctx, p)
    resp = await send(ctx, p, token=token, body=p.body)
    check_status(ctx, p, resp)
    return {**response_evidence(p, resp), "summary": f"{describe(p)} -> {resp.status}"}


HTTP_REQUEST = ActionDef(
    name="httpRequest", params=HttpRequest, target=lambda p: f"{p.method} {_host(p.url)}{urlsplit(p.url).path}"[:120],
    plan=request_plan_action, execute=request_execute,
    observe=lambda ctx, p, plan: _now(observe_call(ctx, p)),
    # ActionDef.idempotent is static, so it cannot be True for GET/PUT/DELETE and False for
    # POST/PATCH: it is False for all, the safe side. A repeat happens only through observe:
    # with the Idempotency-Key (a service that honours it runs it once), never without.
    idempotent=False,
    destructive=False,
)


# --- notify -----------------------------------------------------------------------------


def notify_payload(p: Notify) -> str:
    return json.dumps({"text": p.message, "severity": p.severity})  # Slack reads "text"


async def notify_plan(ctx: ActionContext, p: Notify) -> Evidence:
    out: Evidence = {"message": p.message, "severity": p.severity, "webhook": None,
                     "change": f"notify ({p.severity}): {p.message[:200]}"}
    if p.webhook is not None:
        if p.webhook.body is not None:
            raise InvalidSpecError("notify.webhook.body must be empty: the body is built from message and severity")
        check_headers(p.webhook)
        await token_for(ctx, p.webhook)
        out["webhook"] = request_plan(ctx, p.webhook, notify_payload(p))
    if p.sink is not None:
        out["sink"] = await notify_sinks.plan(ctx, p)
    return out


async def notify_execute(ctx: ActionContext, p: Notify, plan: Evidence) -> Evidence:
    # The engine's completion Event carries "summary", so the message reaches
    # `kubectl get events` whether or not a webhook is configured.
    out: Evidence = {"message": p.message, "severity": p.severity,
                     "summary": f"[{p.severity}] {p.message}"[:500]}
    if p.webhook is not None:
        token = await token_for(ctx, p.webhook)
        resp = await send(ctx, p.webhook, token=token, body=notify_payload(p), content_type="application/json")
        check_status(ctx, p.webhook, resp)
        out["webhook"] = response_evidence(p.webhook, resp)
    if p.sink is not None:
        out["sink"] = await notify_sinks.send(ctx, p)
    return out


async def notify_observe(ctx: ActionContext, p: Notify, plan: Evidence) -> Observation:
    if p.webhook is None and p.sink is not None:
        return NotApplied(f"notify sink {p.sink.format}: sent again with the same dedup key (at-least-once)")
    if p.webhook is None:
        return NotApplied("notify without a webhook only posts an Event: repeating it is harmless")
    seen = observe_call(ctx, p.webhook)
    if isinstance(seen, CannotTell):
        # A duplicate message is better than a lost one: an on-call human de-duplicates easily
        # but never learns of a message that was not sent. So notify is at-least-once here.
        return NotApplied(f"{seen.detail}; notify is at-least-once: sending again")
    return seen


async def _now(value: Observation) -> Observation:
    return value


NOTIFY = ActionDef(
    name="notify", params=Notify,
    target=lambda p: f"Notify/{p.severity}" + (f" via {_host(p.webhook.url)}" if p.webhook else ""),
    plan=notify_plan, execute=notify_execute, observe=notify_observe,
    # With the Idempotency-Key (default), a receiver that honours it shows the message once;
    # without it, notify is at-least-once: after a lost response it is sent again.
    idempotent=True,
    destructive=False,
)
