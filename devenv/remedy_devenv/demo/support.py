"""Small helpers every part of the demo uses: timestamped output, the demo's error types,
a JSON-over-HTTP call and a poll-until-true loop."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


class DemoError(RuntimeError):
    """A step of the demo failed."""


class Interrupted(BaseException):
    """SIGINT / SIGTERM: stop everything and leave."""


def say(msg: str = "") -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}" if msg else "", flush=True)


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10) -> tuple[int, Any]:
    """(status, decoded JSON body or text); HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return int(r.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return int(e.code), json.loads(raw) if raw else None
        except ValueError:
            return int(e.code), raw.decode(errors="replace")


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """The first truthy value of ``fn()``; exceptions count as "not yet"; DemoError on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - not there yet
            last = exc
        time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))
