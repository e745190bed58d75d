"""HTTP actions (runbooks 001-003): the rules of sending one request, httpRequest and notify
(resetCircuitBreaker, which sends through them, is circuit_breaker.py).

Why a module of its own: these three share one hard rule set about *sending* a request, and
it must be applied identically everywhere:

- Retry intent follows what the server may have seen. Only a failure before any byte was
  sent (connection refused, DNS, connect timeout) is a RetryableError; a timeout, a dropped
  connection or a 5xx after sending may have run the side effect, so it is an
  AmbiguousOutcomeError (reason OutcomeUnknown / UpstreamError) and the lifecycle asks ``observe``.
- Effectively once: every request carries ``Idempotency-Key: remedy-<Remediation uid>``, the
  same on every attempt and after operator restarts, unless the call says
  ``idempotencyKey: false``. ``observe`` answers NotApplied for keyed calls (a re-send with the
  same key cannot act twice at a service that honours the header, so the lifecycle re-sends the
  recorded request) and CannotTell for unkeyed ones (the Remediation ends OutcomeUnknown with
  an escalation; it is never sent twice).
- Bearer tokens come from a Secret and never reach plan, evidence or messages: response
  excerpts are redacted, header values that look like credentials are masked, and errors
  name the Secret, not its value.
- Redirects are not followed when sending: a redirect would replay the bearer token to
  whatever the Location names and may change the method.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from ..api.common import SecretKeyRef, parse_duration
from ..api.http import HttpCall, HttpRequest, Notify
from ..base import redaction
from ..base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    PermanentError,
    RetryableError,
)
from . import notify_sinks
from .base import ActionContext, ActionDef, CannotTell, Evidence, NotApplied, Observation

EXCERPT_CHARS = 200
# Read a little more than the excerpt so a token straddling the cut is still redacted whole.
READ_LIMIT = 64 * 1024
REDACTED = "<redacted>"
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|passw|api-?key|cookie|signature", re.IGNORECASE)
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
        raise RetryableError(f"{what}: cannot connect ({short_error(exc)}); nothing was sent", reason="Unreachable") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise AmbiguousOutcomeError(
            f"{what}: {type(exc).__name__} after the request may have been received", reason="OutcomeUnknown",
        ) from None
    return Response(status=status, excerpt=excerpt(text, [token]), ms=int((time.monotonic() - started) * 1000))


def check_status(ctx: ActionContext, call: HttpCall, resp: Response) -> None:
    if resp.status in call.expect_status:
        return
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


def short_error(exc: BaseException) -> str:
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
    # The lifecycle's completion Event carries "summary", so the message reaches
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
