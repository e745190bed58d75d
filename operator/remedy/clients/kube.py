"""The Kubernetes API seam: reads and patches remedy's objects, Secrets and workloads.

The official ``kubernetes`` client is synchronous; every call runs in a worker thread so the
kopf event loop never blocks. A thread cannot be cancelled, so every call carries a
``_request_timeout`` (settings): ``spec.timeout`` cancels the awaiting task and the thread ends
by itself within that bound. API errors are translated here, once, into remedy's error tree:

- reads: 409/429/5xx, timeouts and resets are RetryableError; 401/403 Forbidden; 404 TargetNotFound.
- MUTATING calls (``call(..., mutating=True)``): only failures that prove nothing was applied
  are RetryableError (connection refused / connect timeout: no byte sent; 429; 409 conflict of
  a precondition). A read timeout, a reset or a 5xx/504 after sending raise
  AmbiguousOutcomeError: the server may have applied the change and lost only the answer,
  so the lifecycle observes the target instead of planning again.

urllib3 never retries a request on its own here (read/status retries are 0): a hidden resend
of a PATCH after a read timeout would be exactly the duplicate this module exists to prevent.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from ..api.common import SecretKeyRef
from ..base.constants import API_VERSION, EVENT_REPORTING_COMPONENT, GROUP, REMEDIATION_KIND, VERSION
from ..base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    PermanentError,
    RetryableError,
    SecretRefError,
    TargetNotFoundError,
)

T = TypeVar("T")
# The operator's own writes fail loudly on a field the schema does not know, instead of the API
# server dropping it silently (issue 13): a status field missing from the CRD is a bug to see.
STRICT = "Strict"


def translate(exc: ApiException, what: str, mutating: bool = False) -> Exception:
    status = exc.status or 0
    if mutating and (status >= 500 or status == 0):
        # 500/503/504 after the request was sent: the write may have been applied.
        return AmbiguousOutcomeError(f"API server answered {status} on {what}; the change may have been applied",
                                     reason="OutcomeUnknown")
    if status == 404:
        return TargetNotFoundError(f"{what} not found")
    if status in (401, 403):
        return ForbiddenError(f"forbidden: {what}: the operator's ServiceAccount lacks permission ({exc.reason})")
    if mutating and (status == 409 or (status == 422 and _failed_test_op(exc))):
        # The write's precondition (resourceVersion, or a JSON-patch ``test`` op on a field the
        # plan read) failed: someone changed the target since the plan; nothing was applied.
        return RetryableError(f"{what}: the target changed since the plan ({_short_body(exc)})", delay=0.5,
                              reason="TargetChanged")
    if status == 409:
        return RetryableError(f"conflict on {what}; retrying", delay=0.5, reason="Conflict")
    if status == 422 or status == 400:
        return PermanentError(f"{what} rejected by the API server: {_short_body(exc)}", reason="Invalid")
    if status == 429 or status >= 500 or status == 0:
        return RetryableError(f"API server error {status} on {what}", delay=3.0, reason="APIUnavailable")
    return PermanentError(f"API error {status} on {what}: {exc.reason}", reason="APIError")


# Transport failures that prove no request byte reached the server.
_NOT_SENT = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError, ConnectionRefusedError)


def translate_transport(exc: BaseException, what: str, mutating: bool) -> Exception:
    """A failure below HTTP (timeout, reset, refused), by whether the server may have seen it."""
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None else exc
    name = type(reason).__name__
    if mutating and not isinstance(reason, _NOT_SENT):
        return AmbiguousOutcomeError(f"{name} during {what} after the request was sent; the change may have been applied",
                                     reason="OutcomeUnknown")
    return RetryableError(f"API server unreachable during {what}: {name}", delay=3.0, reason="APIUnavailable")


_TRANSPORT_ERRORS = (OSError, TimeoutError, urllib3.exceptions.HTTPError)


_JSON_PATCH_FAILED = "the server rejected our request due to an error in our request"


def _failed_test_op(exc: ApiException) -> bool:
    """A JSON patch that could not be applied: the API server answers 422 with this generic
    message and no causes (it drops the json-patch error text). For remedy's patches, whose
    ``test`` ops come first, that is a failed precondition; the caller confirms it by
    re-reading the tested fields (remedy.actions.workload._patch)."""
    import json

    try:
        doc = json.loads(exc.body or "{}")
    except ValueError:
        return False
    return doc.get("message") == _JSON_PATCH_FAILED and not (doc.get("details") or {}).get("causes")


def _short_body(exc: ApiException) -> str:
    import json

    try:
        doc = json.loads(exc.body or "{}")
        causes = [str(c.get("message")) for c in (doc.get("details") or {}).get("causes") or [] if c.get("message")]
        return "; ".join([str(doc.get("message", exc.reason)), *causes])[:300]
    except ValueError:
        return str(exc.reason)


class KubeClient:
    """Async facade over the sync client; one instance per operator process."""

    def __init__(self, api_client: k8s.ApiClient, request_timeout: float = 15.0, connect_timeout: float = 5.0) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.events = k8s.EventsV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.request_timeout = (connect_timeout, request_timeout)
        # Connection attempts may be retried (nothing was sent); reads and statuses never are.
        pool = api_client.rest_client.pool_manager
        pool.connection_pool_kw["retries"] = urllib3.util.Retry(total=3, connect=3, read=0, status=0, other=0, redirect=0)
        pool.clear()

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, mutating: bool = False, **kwargs: Any) -> Any:
        """Run one client call in a thread, bounded by the request timeout. ``mutating`` says
        whether a lost answer leaves the outcome unknown (see the module docstring).
        Returns Any: the generated models type every field as Optional, which says nothing
        useful about objects the API server returned."""
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            raise translate(exc, what, mutating) from None
        except _TRANSPORT_ERRORS as exc:
            raise translate_transport(exc, what, mutating) from None

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
            GROUP, VERSION, namespace, plural, name, body, field_validation=STRICT,
        )
        return obj

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.call(
            f"create {plural}", self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body,
            field_validation=STRICT,
        )
        return obj

    async def create_object_if_absent(self, plural: str, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Create; (None, False) when the name exists. Deterministic names make this the dedup primitive."""
        try:
            obj: dict[str, Any] = await asyncio.to_thread(
                self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body,  # type: ignore[arg-type]
                _request_timeout=self.request_timeout, field_validation=STRICT,
            )
            return obj, True
        except ApiException as exc:
            if exc.status == 409:
                return None, False
            raise translate(exc, f"create {plural}/{body['metadata'].get('name')}") from None
        except _TRANSPORT_ERRORS as exc:
            # A lost create answer is safe to retry: the deterministic name makes a repeat a 409.
            raise translate_transport(exc, f"create {plural}", mutating=False) from None

    async def delete_object(self, plural: str, namespace: str, name: str, uid: str) -> bool:
        """Delete exactly this object (uid precondition: never a newer one of the same name);
        False when it is already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await self.call(f"delete {plural}/{name}", self.custom.delete_namespaced_custom_object,
                            GROUP, VERSION, namespace, plural, name, body=body, mutating=False)
        except TargetNotFoundError:
            return False
        return True

    async def list_objects(self, plural: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        res: dict[str, Any] = await self.call(
            f"list {plural}", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
            label_selector=label_selector,
        )
        items: list[dict[str, Any]] = res.get("items", [])
        return items

    async def list_all_objects(self, plural: str, namespaces: list[str] | None = None) -> list[dict[str, Any]]:
        """Every object of ``plural`` in these namespaces (None: cluster-wide)."""
        if namespaces is None:
            res: dict[str, Any] = await self.call(f"list {plural}", self.custom.list_cluster_custom_object,
                                                  GROUP, VERSION, plural)
            return list(res.get("items", []))
        out: list[dict[str, Any]] = []
        for ns in namespaces:
            out += await self.list_objects(plural, ns)
        return out

    # --- leases (runtime/shards.py) ------------------------------------------------------
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            lease = await self.call(f"lease {namespace}/{name}", self.coordination.read_namespaced_lease, name, namespace)
        except TargetNotFoundError:
            return None
        doc: dict[str, Any] = self.api_client.sanitize_for_serialization(lease)  # type: ignore[no-untyped-call]
        return doc

    async def write_lease(self, namespace: str, body: dict[str, Any], *, create: bool) -> dict[str, Any] | None:
        """Create, or replace under the body's resourceVersion; None when someone else wrote
        first (409), so a lost race is an answer, not an error."""
        name = body["metadata"]["name"]
        try:
            if create:
                lease = await self.call(f"lease {namespace}/{name}", self.coordination.create_namespaced_lease,
                                        namespace, body)
            else:
                lease = await self.call(f"lease {namespace}/{name}", self.coordination.replace_namespaced_lease,
                                        name, namespace, body)
        except RetryableError as exc:
            if exc.reason == "Conflict":  # translate(): a 409 on a call that is not mutating
                return None
            raise
        doc: dict[str, Any] = self.api_client.sanitize_for_serialization(lease)  # type: ignore[no-untyped-call]
        return doc

    # --- events -------------------------------------------------------------------------
    async def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """An events.k8s.io/v1 Event on ``obj`` with a microsecond ``eventTime``, so Events a few
        milliseconds apart keep their order in `kubectl remedy describe`/`report` timelines
        (core/v1 timestamps have whole seconds). Works from any task (kopf's poster needs its own
        context); core/v1 readers see the same Event (involvedObject = regarding, message = note)."""
        import uuid
        from datetime import datetime, timezone

        meta = obj["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"{meta['name'][:200]}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "regarding": {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": obj.get("kind", REMEDIATION_KIND),
                          "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                          "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason[:128], "action": reason[:128], "note": message[:1024],
            "eventTime": now, "reportingController": EVENT_REPORTING_COMPONENT, "reportingInstance": "remedy",
        }
        await self.call(f"event on {meta['name']}", self.events.create_namespaced_event, meta["namespace"], body)

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
