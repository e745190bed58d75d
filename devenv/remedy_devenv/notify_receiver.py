"""A local stand-in for Slack, PagerDuty, Opsgenie, Microsoft Teams and a generic webhook that
validates each request against the receiver's documented format (required fields, enums,
sizes, auth) and answers like the real service (status code and body), so a test sees exactly
what a malformed message would get in production. It is the witness for notify sinks: it
counts deliveries and, where the service deduplicates (PagerDuty dedup_key, Opsgenie alias,
generic Idempotency-Key), open alerts per key.

Formats checked (public API docs):
- Slack incoming webhook: JSON with non-empty ``text`` (<= 40,000) and/or ``blocks`` (<= 50;
  section text <= 3,000); 200 "ok", else 400 "invalid_payload"; the URL path carries the token.
- PagerDuty Events API v2 (/v2/enqueue): routing_key (32 chars), event_action trigger|
  acknowledge|resolve, dedup_key <= 255, payload.summary (<= 1,024), payload.source,
  payload.severity critical|error|warning|info; 202 {"status": "success", "dedup_key"}, else
  400 {"status": "invalid event", "errors": [...]}.
- Opsgenie Alert API (/v2/alerts): header "Authorization: GenieKey <key>" (else 401),
  message (<= 130), alias (<= 512), description (<= 15,000), priority P1-P5, source (<= 100),
  tags (each <= 50); 202 {"result": "Request will be processed", "requestId"}, else 422.
- Microsoft Teams (Workflows webhook): {"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard", "version",
  "body": [...]}}]}, body <= 28 KB; 202, else 400.
- generic: JSON with ``text``; Idempotency-Key header recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .testkit import free_port


@dataclass
class Delivery:
    format: str
    valid: bool
    errors: list[str]
    body: Any
    headers: dict[str, str]
    path: str


@dataclass
class NotifyReceiver:
    slack_token: str
    pagerduty_key: str
    opsgenie_key: str
    teams_token: str
    port: int = field(default_factory=free_port)
    deliveries: list[Delivery] = field(default_factory=list)
    open_alerts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def slack_url(self) -> str:
        return f"{self.url}/services/{self.slack_token}"

    @property
    def teams_url(self) -> str:
        return f"{self.url}/workflows/{self.teams_token}"

    def of(self, fmt: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.format == fmt]

    # --- validation -------------------------------------------------------------------
    @staticmethod
    def _text(errors: list[str], obj: dict[str, Any], key: str, limit: int, required: bool = True) -> None:
        value = obj.get(key)
        if value is None:
            if required:
                errors.append(f"{key} is required")
            return
        if not isinstance(value, str) or (required and not value):
            errors.append(f"{key} must be a non-empty string")
        elif len(value) > limit:
            errors.append(f"{key} longer than {limit}")

    def _slack(self, body: Any, errors: list[str]) -> None:
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            errors.append("no text or blocks")
            return
        self._text(errors, body, "text", 40000, required=not body.get("blocks"))
        blocks = body.get("blocks") or []
        if not isinstance(blocks, list) or len(blocks) > 50:
            errors.append("blocks must be a list of at most 50")
            return
        for b in blocks:
            if not isinstance(b, dict) or b.get("type") not in ("section", "context", "header", "divider", "actions", "image"):
                errors.append(f"unknown block {b!r:.80}")
            elif b["type"] == "section":
                t = b.get("text") or {}
                if t.get("type") not in ("mrkdwn", "plain_text") or not t.get("text") or len(t["text"]) > 3000:
                    errors.append("section.text must be mrkdwn/plain_text, 1-3000 chars")

    def _pagerduty(self, body: Any, errors: list[str]) -> None:
        if not isinstance(body, dict):
            errors.append("not an object")
            return
        if body.get("routing_key") != self.pagerduty_key or len(str(body.get("routing_key"))) != 32:
            errors.append("routing_key is invalid")
        if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
            errors.append("event_action must be trigger, acknowledge or resolve")
        if body.get("dedup_key") is not None and len(str(body["dedup_key"])) > 255:
            errors.append("dedup_key longer than 255")
        payload = body.get("payload")
        if body.get("event_action") == "trigger":
            if not isinstance(payload, dict):
                errors.append("payload is required for trigger")
                return
            self._text(errors, payload, "summary", 1024)
            self._text(errors, payload, "source", 255)
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("payload.severity must be critical, error, warning or info")

    def _opsgenie(self, body: Any, headers: dict[str, str], errors: list[str]) -> int | None:
        if headers.get("Authorization") != f"GenieKey {self.opsgenie_key}":
            return 401
        if not isinstance(body, dict):
            errors.append("not an object")
            return None
        self._text(errors, body, "message", 130)
        self._text(errors, body, "alias", 512, required=False)
        self._text(errors, body, "description", 15000, required=False)
        self._text(errors, body, "source", 100, required=False)
        if body.get("priority") not in (None, "P1", "P2", "P3", "P4", "P5"):
            errors.append("priority must be P1-P5")
        if any(not isinstance(t, str) or len(t) > 50 for t in body.get("tags") or []):
            errors.append("tags must be strings of at most 50")
        return None

    def _teams(self, body: Any, raw: bytes, errors: list[str]) -> None:
        if len(raw) > 28 * 1024:
            errors.append("payload larger than 28 KB")
        if not isinstance(body, dict) or body.get("type") != "message":
            errors.append("type must be message")
            return
        atts = body.get("attachments")
        if not isinstance(atts, list) or not atts:
            errors.append("attachments required")
            return
        for a in atts:
            content = (a or {}).get("content") or {}
            if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
                errors.append("contentType must be application/vnd.microsoft.card.adaptive")
            if content.get("type") != "AdaptiveCard" or not content.get("version") or not isinstance(content.get("body"), list):
                errors.append("content must be an AdaptiveCard with version and body")
            elif any(not isinstance(el, dict) or "type" not in el for el in content["body"]):
                errors.append("card body elements need a type")

    # --- HTTP ---------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers.items())
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        path = request.path
        errors: list[str] = []
        fmt = "unknown"
        if path == f"/services/{self.slack_token}":
            fmt = "slack"
            self._slack(body, errors)
            ok: web.Response = web.Response(text="ok")
            bad = web.Response(status=400, text="invalid_payload")
        elif path.startswith("/services/"):
            self.deliveries.append(Delivery("slack", False, ["bad token"], body, headers, path))
            return web.Response(status=403, text="invalid_token")
        elif path == "/v2/enqueue":
            fmt = "pagerduty"
            self._pagerduty(body, errors)
            key = str((body or {}).get("dedup_key") or uuid.uuid4().hex) if isinstance(body, dict) else ""
            ok = web.json_response({"status": "success", "message": "Event processed", "dedup_key": key}, status=202)
            bad = web.json_response({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, status=400)
            if not errors:
                self.open_alerts["pagerduty"][key] = self.open_alerts["pagerduty"].get(key, 0) + 1
        elif path == "/v2/alerts":
            fmt = "opsgenie"
            code = self._opsgenie(body, headers, errors)
            if code == 401:
                self.deliveries.append(Delivery(fmt, False, ["unauthorized"], body, headers, path))
                return web.json_response({"message": "Could not authenticate", "took": 0.0, "requestId": str(uuid.uuid4())}, status=401)
            ok = web.json_response({"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())}, status=202)
            bad = web.json_response({"message": "; ".join(errors), "took": 0.0, "requestId": str(uuid.uuid4())}, status=422)
            if not errors:
                alias = str(body.get("alias") or uuid.uuid4().hex)
                self.open_alerts["opsgenie"][alias] = self.open_alerts["opsgenie"].get(alias, 0) + 1
        elif path == f"/workflows/{self.teams_token}":
            fmt = "teams"
            self._teams(body, raw, errors)
            ok = web.Response(status=202)
            bad = web.Response(status=400, text="; ".join(errors))
        elif path == "/generic":
            fmt = "generic"
            if not isinstance(body, dict) or not body.get("text"):
                errors.append("text required")
            ok = web.json_response({"received": True})
            bad = web.json_response({"errors": errors}, status=400)
            key = headers.get("Idempotency-Key")
            if not errors and key:
                self.open_alerts["generic"][key] = self.open_alerts["generic"].get(key, 0) + 1
        else:
            return web.Response(status=404)
        self.deliveries.append(Delivery(fmt, not errors, errors, body, headers, path))
        return bad if errors else ok

    def start(self) -> NotifyReceiver:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True, name="notify-receiver").start()
        if not ready.wait(10):
            raise RuntimeError("notify receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
