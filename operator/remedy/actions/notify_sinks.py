"""notify in the wire formats people already receive alerts in (spec.action.notify.sink).

Why a module of its own: each receiver has its own JSON shape, size limits, auth and dedup
semantics, and getting them right is the whole value of the sink. The payload builders are pure
(unit-tested against the formats); ``send`` reads the secrets by reference (registered for
redaction the moment they are read), sends once through the egress-checked HTTP session, and
maps the answer.

Dedup: PagerDuty ``dedup_key`` and Opsgenie ``alias`` make a resend update the open alert; the
generic format carries ``dedupKey`` and an Idempotency-Key header. Slack and Teams incoming
webhooks cannot update a message: there the Remediation itself is the dedup (sent once; a
resend happens only after an ambiguous outcome, at-least-once like notify's webhook).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..api.common import parse_duration
from ..api.http import Notify
from ..api.notify import NotifySink
from ..base.errors import InvalidSpecError, PermanentError, RetryableError
from .base import ActionContext, Evidence

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
OPSGENIE_URL = "https://api.opsgenie.com/v2/alerts"
OK_STATUS = {"slack": {200}, "pagerduty": {202}, "opsgenie": {202}, "teams": {200, 202}, "generic": {200, 201, 202, 204}}
# Receiver limits (characters): PagerDuty summary 1024, dedup_key 255; Opsgenie message 130,
# alias 512, description 15000, source 100, tag 50; Slack section text 3000; Teams ~28 KB body.
LIMITS = {"pd_summary": 1024, "pd_dedup": 255, "og_message": 130, "og_alias": 512, "og_description": 15000,
          "og_source": 100, "slack_section": 3000, "teams_text": 20000}
_PD_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}
_OG_PRIORITY = {"info": "P5", "warning": "P3", "critical": "P1"}
_SLACK_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_TEAMS_COLOR = {"info": "Accent", "warning": "Warning", "critical": "Attention"}
_KEY_SHOWN = "<from Secret>"


def dedup_key(ctx: ActionContext, sink: NotifySink) -> str:
    return (sink.dedup_key or f"remedy/{ctx.namespace}/{ctx.name}")[: LIMITS["pd_dedup"]]


def source_of(ctx: ActionContext, sink: NotifySink) -> str:
    return (sink.source or f"remedy/{ctx.namespace}")[: LIMITS["og_source"]]


def build(fmt: str, message: str, severity: str, dedup: str, source: str, details: dict[str, str],
          key: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(JSON body, extra headers) for one receiver format. ``key`` is the routing/API key."""
    if fmt == "slack":
        text = f"{_SLACK_ICON[severity]} *[{severity}]* {message}"
        return {"text": text[:LIMITS["slack_section"]],  # fallback for notifications
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:LIMITS["slack_section"]]}},
                           {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{source} · {dedup}"[:LIMITS["slack_section"]]}]}]}, {}
    if fmt == "pagerduty":
        return {"routing_key": key or "", "event_action": "trigger", "dedup_key": dedup[:LIMITS["pd_dedup"]], "client": "remedy",
                "payload": {"summary": message[:LIMITS["pd_summary"]], "source": source, "severity": _PD_SEVERITY[severity],
                            "component": details.get("remediation", ""), "group": details.get("namespace", ""),
                            "class": "remediation", "custom_details": details}}, {}
    if fmt == "opsgenie":
        return {"message": message[:LIMITS["og_message"]], "alias": dedup[:LIMITS["og_alias"]],
                "description": message[:LIMITS["og_description"]], "priority": _OG_PRIORITY[severity],
                "source": source[:LIMITS["og_source"]], "tags": ["remedy", severity],
                "details": {k: str(v)[:8000] for k, v in details.items()}}, {"Authorization": f"GenieKey {key or ''}"}
    if fmt == "teams":
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4",
                "body": [{"type": "TextBlock", "text": f"[{severity}] remedy", "weight": "Bolder", "size": "Medium",
                          "color": _TEAMS_COLOR[severity], "wrap": True},
                         {"type": "TextBlock", "text": message[:LIMITS["teams_text"]], "wrap": True},
                         {"type": "FactSet", "facts": [{"title": k, "value": str(v)[:500]} for k, v in details.items()]}]}
        return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                    "contentUrl": None, "content": card}]}, {}
    if fmt == "generic":
        return {"text": message, "severity": severity, "dedupKey": dedup, "source": source, "details": details}, {"Idempotency-Key": dedup}
    raise InvalidSpecError(f"notify.sink.format {fmt!r} is not supported")


def _endpoint_check(sink: NotifySink) -> None:
    has_url = sink.url is not None or sink.url_secret_ref is not None
    if sink.url is not None and sink.url_secret_ref is not None:
        raise InvalidSpecError("notify.sink: set url or urlSecretRef, not both")
    if sink.format in ("slack", "teams", "generic") and not has_url:
        raise InvalidSpecError(f"notify.sink ({sink.format}) needs url or urlSecretRef")
    if sink.format in ("pagerduty", "opsgenie") and sink.key_secret_ref is None:
        raise InvalidSpecError(f"notify.sink ({sink.format}) needs keySecretRef (the {'routing' if sink.format == 'pagerduty' else 'API'} key)")


def _default_url(sink: NotifySink) -> str | None:
    return {"pagerduty": PAGERDUTY_URL, "opsgenie": OPSGENIE_URL}.get(sink.format)


def _shown_endpoint(sink: NotifySink) -> str:
    if sink.url_secret_ref is not None:
        return f"URL from Secret {sink.url_secret_ref.name}/{sink.url_secret_ref.key}"
    return str(sink.url or _default_url(sink))


def _details(ctx: ActionContext) -> dict[str, str]:
    return {"remediation": ctx.name, "namespace": ctx.namespace, "uid": ctx.uid}


async def plan(ctx: ActionContext, p: Notify) -> Evidence:
    sink = p.sink
    assert sink is not None
    _endpoint_check(sink)
    url = await ctx.optional_secret(sink.url_secret_ref) if sink.url_secret_ref is not None else (sink.url or _default_url(sink))
    if not url or urlsplit(url).scheme not in ("http", "https"):
        raise InvalidSpecError(f"notify.sink endpoint ({_shown_endpoint(sink)}) is not an http(s) URL")
    await ctx.optional_secret(sink.key_secret_ref)  # resolves now: a missing Secret fails the plan, not the send
    body, _ = build(sink.format, p.message, p.severity, dedup_key(ctx, sink), source_of(ctx, sink), _details(ctx),
                    key=_KEY_SHOWN if sink.key_secret_ref is not None else None)
    return {"format": sink.format, "endpoint": _shown_endpoint(sink), "dedupKey": dedup_key(ctx, sink),
            "bodyBytes": len(json.dumps(body).encode()), "body": body}


async def send(ctx: ActionContext, p: Notify) -> Evidence:
    sink = p.sink
    assert sink is not None
    _endpoint_check(sink)
    url = await ctx.secret(sink.url_secret_ref) if sink.url_secret_ref is not None else (sink.url or _default_url(sink))
    key = await ctx.optional_secret(sink.key_secret_ref)
    dedup = dedup_key(ctx, sink)
    body, headers = build(sink.format, p.message, p.severity, dedup, source_of(ctx, sink), _details(ctx), key=key)
    shown = f"notify sink {sink.format} ({urlsplit(str(url)).netloc})"
    try:
        async with ctx.connectors.http(parse_duration(sink.timeout)) as session, \
                session.post(str(url), data=json.dumps(body).encode(), allow_redirects=False,
                             headers={"Content-Type": "application/json", **headers}) as resp:
            status = int(resp.status)
            text = (await resp.content.read(2048)).decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # At-least-once: the dedup key (where the receiver has one) makes the resend an update.
        raise RetryableError(f"{shown}: {type(exc).__name__}; sending again", delay=3.0, reason="SinkUnreachable") from None
    if status in OK_STATUS[sink.format]:
        return {"format": sink.format, "endpoint": _shown_endpoint(sink), "status": status, "dedupKey": dedup,
                "response": text[:300]}
    if status == 429 or status >= 500:
        raise RetryableError(f"{shown}: HTTP {status}: {text[:200]}", delay=5.0, reason="SinkUnavailable")
    raise PermanentError(f"{shown} refused the message: HTTP {status}: {text[:300]}", reason="SinkRejected")
