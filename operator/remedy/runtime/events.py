"""Kubernetes Events posted through our own client, from any task.

Why a module: kopf's poster only works inside kopf's handler context, and the webhook
receiver, the loops and the lifecycle post from their own tasks (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..clients.kube import KubeClient

log = logging.getLogger("remedy")


class ApiRecorder:
    """Kubernetes Events posted through our own client, from any task (the webhook's too),
    without blocking the caller; a failed post is logged, never raised."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self._tasks: set[asyncio.Task[None]] = set()

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(self._post(obj, type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(obj, type_, reason, message)
        except Exception as exc:  # noqa: BLE001 - an event is best effort
            log.debug("event %s on %s not posted: %s", reason, obj.get("metadata", {}).get("name"), exc)
