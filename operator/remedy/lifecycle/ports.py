"""What the lifecycle needs from the world, as protocols: the object store, the Event
recorder, the metrics observer and the action-context factory.

Why a module: the policy machinery posts Events through the same Recorder, and tests plug
fakes into each port (tests/fixtures/fakes.py) without the lifecycle's machinery.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..actions.base import ActionContext


class Store(Protocol):
    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]: ...


class Recorder(Protocol):
    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class Observer(Protocol):
    def finished(self, action: str, phase: str, reason: str, seconds: float | None) -> None: ...
    def started(self, action: str) -> None: ...


class ContextFactory(Protocol):
    def __call__(self, obj: dict[str, Any]) -> ActionContext: ...
