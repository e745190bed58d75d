"""Guard blocks posted as one Event series per (policy, guard): why a module: a storm of
blocked firings must not become a storm of Events, and the batching is its own small clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..base import rfc3339
from ..lifecycle.ports import Recorder


class BlockEvents:
    """Guard blocks as one Event series per (policy, guard), not one Event per alert: the first
    block posts at once, later ones within ``window`` seconds are counted and posted as one
    Event carrying the count and the last block's time and message (a storm of 5,000 blocked
    alerts was 5,000 Events on the API server)."""

    def __init__(self, recorder: Recorder, window: float = 5.0) -> None:
        self.recorder = recorder
        self.window = window
        self._last_post: dict[tuple[str, str, str], float] = {}
        # key -> [count, first time, last time, last message, policy]
        self._held: dict[tuple[str, str, str], list[Any]] = {}

    def note(self, policy: dict[str, Any], guard: str, message: str) -> None:
        meta = policy["metadata"]
        key = (meta["namespace"], meta["name"], guard)
        now = time.time()
        if now - self._last_post.get(key, 0.0) >= self.window and key not in self._held:
            self._last_post[key] = now
            self.recorder.event(policy, "Warning", f"Blocked{guard.capitalize()}", message)
            return
        held = self._held.get(key)
        if held is None:
            self._held[key] = [1, now, now, message, policy]
            delay = max(0.0, self._last_post.get(key, now) + self.window - now)
            asyncio.get_running_loop().call_later(delay, self._flush, key)
        else:
            held[0] += 1
            held[2], held[3], held[4] = now, message, policy

    def _flush(self, key: tuple[str, str, str]) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        count, first, last, message, policy = held
        self._last_post[key] = time.time()
        self.recorder.event(policy, "Warning", f"Blocked{key[2].capitalize()}",
                            f"{message} (blocked {count} firing(s) between {rfc3339.format_time(first)} "
                            f"and {rfc3339.format_time(last)})"[:1024])

