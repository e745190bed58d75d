"""The Kubernetes API seam: reads and patches remedy's objects, Secrets and workloads.

The official ``kubernetes`` client is synchronous; every call runs in a worker thread so the
kopf event loop never blocks. API errors are translated here, once, into remedy's error
tree (409/429/5xx retryable; 401/403 Forbidden; 404 TargetNotFound).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from ..constants import API_VERSION, EVENT_REPORTING_COMPONENT, GROUP, REMEDIATION_KIND, VERSION
from ..api.common import SecretKeyRef
from ..errors import ForbiddenError, PermanentError, RetryableError, SecretRefError, TargetNotFoundError

T = TypeVar("T")


def translate(exc: ApiException, what: str) -> Exception:
    status = exc.status or 0
    if status == 404:
        return TargetNotFoundError(f"{what} not found")
    if status in (401, 403):
        return ForbiddenError(f"forbidden: {what}: the operator's ServiceAccount lacks permission ({exc.reason})")
    if status == 409:
        return RetryableError(f"conflict on {what}; retrying", delay=0.5, reason="Conflict")
    if status == 422 or status == 400:
        return PermanentError(f"{what} rejected by the API server: {_short_body(exc)}", reason="Invalid")
    if status == 429 or status >= 500 or status == 0:
        return RetryableError(f"API server error {status} on {what}", delay=3.0, reason="APIUnavailable")
    return PermanentError(f"API error {status} on {what}: {exc.reason}", reason="APIError")


def _short_body(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", exc.reason))[:300]
    except ValueError:
        return str(exc.reason)


class KubeClient:
    """Async facade over the sync client; one instance per operator process."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call in a thread. Returns Any: the generated models type every field
        as Optional, which says nothing useful about objects the API server returned."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            raise translate(exc, what) from None
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"API server unreachable during {what}: {type(exc).__name__}", delay=3.0, reason="APIUnavailable") from None

    # --- remedy objects ---------------------------------------------------------------
    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.call(
                f"{plural}/{name}", self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
            return obj
        except TargetNotFoundError:
            return None

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status}
        if resource_version:
            # A merge patch carrying resourceVersion is an optimistic lock: 409 if anyone wrote since.
            body["metadata"] = {"resourceVersion": resource_version}
        obj: dict[str, Any] = await self.call(
            f"{plural}/{name} status",
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, plural, name, body,
        )
        return obj

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.call(
            f"create {plural}", self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body
        )
        return obj

    async def create_object_if_absent(self, plural: str, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Create; (None, False) when the name exists. Deterministic names make this the dedup primitive."""
        try:
            obj: dict[str, Any] = await asyncio.to_thread(
                self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body  # type: ignore[arg-type]
            )
            return obj, True
        except ApiException as exc:
            if exc.status == 409:
                return None, False
            raise translate(exc, f"create {plural}/{body['metadata'].get('name')}") from None
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"API server unreachable: {type(exc).__name__}", delay=3.0, reason="APIUnavailable") from None

    async def list_objects(self, plural: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        res: dict[str, Any] = await self.call(
            f"list {plural}", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = res.get("items", [])
        return items

    # --- events -------------------------------------------------------------------------
    async def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on ``obj``; works from any task (kopf's poster needs its own context)."""
        import uuid
        from datetime import datetime, timezone

        meta = obj["metadata"]
        now = datetime.now(timezone.utc)
        body = {
            "metadata": {"name": f"{meta['name'][:200]}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": obj.get("kind", REMEDIATION_KIND),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason[:128], "message": message[:1024],
            "source": {"component": "remedy"}, "reportingComponent": EVENT_REPORTING_COMPONENT,
            "reportingInstance": "remedy", "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        await self.call(f"event on {meta['name']}", self.core.create_namespaced_event, meta["namespace"], body)

    # --- secrets ------------------------------------------------------------------------
    async def read_secret_key(self, namespace: str, ref: SecretKeyRef) -> str:
        """The decoded value; errors name the Secret and key, never the value."""
        try:
            secret = await self.call(f"Secret {ref.name}", self.core.read_namespaced_secret, ref.name, namespace)
        except TargetNotFoundError:
            raise SecretRefError(f"Secret {namespace}/{ref.name} not found") from None
        except ForbiddenError:
            raise ForbiddenError(f"forbidden to read Secret {namespace}/{ref.name}") from None
        data = secret.data or {}
        if ref.key not in data:
            raise SecretRefError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}", reason="SecretKeyNotFound")
        return base64.b64decode(data[ref.key]).decode("utf-8").strip()
