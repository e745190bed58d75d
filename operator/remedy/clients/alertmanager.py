"""Alertmanager API v2 client: silences (create, list, expire) and active alerts.

Why: policies live beside Alertmanager: they silence what their action will cause, and hold
off while other alerts fire or a maintenance silence is in place. Every call is bounded by a
timeout; a failure is a RetryableError (reason AlertmanagerUnavailable), so callers decide
whether to fail closed (holds) or retry later (silence bookkeeping).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from ..base import rfc3339
from ..base.errors import RetryableError

CREATED_BY = "remedy"


def _iso(t: datetime) -> str:
    return rfc3339.format_time(t, ms=True)


def matches(matchers: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """Alertmanager semantics: every matcher must hold; a missing label is the empty string;
    regexes are anchored."""
    for m in matchers:
        value = labels.get(str(m.get("name")), "")
        want = str(m.get("value", ""))
        hit = re.fullmatch(want, value) is not None if m.get("isRegex") else value == want
        if hit != bool(m.get("isEqual", True)):
            return False
    return True


class Alertmanager:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, \
                    session.request(method, f"{self.url}/api/v2{path}", json=body) as r:
                text = await r.text()
                if r.status >= 400:
                    raise RetryableError(f"Alertmanager {method} {path}: HTTP {r.status}: {text[:200]}",
                                         delay=5.0, reason="AlertmanagerUnavailable")
                return await r.json(content_type=None) if text else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"Alertmanager {method} {path}: {type(exc).__name__}", delay=5.0,
                                 reason="AlertmanagerUnavailable") from None

    async def create_silence(self, matchers: list[dict[str, Any]], duration_s: float, comment: str) -> str:
        now = datetime.now(timezone.utc)
        body = {"matchers": matchers, "startsAt": _iso(now), "endsAt": _iso(now + timedelta(seconds=duration_s)),
                "createdBy": CREATED_BY, "comment": comment}
        res = await self._call("POST", "/silences", body)
        return str(res["silenceID"])

    async def silences(self) -> list[dict[str, Any]]:
        res = await self._call("GET", "/silences")
        return list(res or [])

    async def expire_silence(self, silence_id: str) -> None:
        try:
            await self._call("DELETE", f"/silence/{silence_id}")
        except RetryableError as exc:
            if "HTTP 404" not in exc.message:  # already gone
                raise

    async def active_alerts(self) -> list[dict[str, Any]]:
        """Firing alerts that are neither silenced nor inhibited."""
        res = await self._call("GET", "/alerts?active=true&silenced=false&inhibited=false&unprocessed=true")
        return list(res or [])
