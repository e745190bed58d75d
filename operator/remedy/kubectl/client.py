"""The few Kubernetes API calls the plugin makes, with the errors kubectl would print.

Synchronous on purpose: a CLI makes a handful of calls and exits. Every failure becomes a
``PluginError`` whose text is what the person sees on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from ..base.constants import GROUP, KUBECTL_FIELD_MANAGER, VERSION


class PluginError(Exception):
    """A user-facing failure: printed on stderr, exit code 1."""


class Kube:
    """The API calls the commands need: get, list, create, apply, merge-patch remedy objects; an object's Events."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig)
        except (ConfigException, OSError, yaml.YAMLError) as exc:
            raise PluginError(f"cannot load kubeconfig: {exc}") from None
        chosen = active
        if context:
            chosen = next((c for c in contexts or [] if c.get("name") == context), active)
        ctx = (chosen or {}).get("context") or {}
        self.default_namespace: str = str(ctx.get("namespace") or "default")
        self.user: str | None = ctx.get("user") or None
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise PluginError(f"Error from server (NotFound): {what} not found") from None
            raise PluginError(f"Error from server ({exc.reason}): {what}: {_api_message(exc)}") from None
        except HTTPError as exc:
            raise PluginError(f"cannot reach the API server: {exc}") from None

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.call(f'{plural}.{GROUP} "{name}" in namespace "{ns}"',
                                        self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name)
        return obj

    def list_objects(self, plural: str, ns: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        if ns is None:
            res = self.call(f"{plural}.{GROUP}", self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **kwargs)
        else:
            res = self.call(f"{plural}.{GROUP}", self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural, **kwargs)
        return [dict(i) for i in (res or {}).get("items") or []]

    def merge_patch(self, plural: str, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.call(
            f'{plural}.{GROUP} "{name}" in namespace "{ns}"', self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, ns, plural, name, body, field_manager=KUBECTL_FIELD_MANAGER,
            _content_type="application/merge-patch+json")
        return obj

    def find(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (other errors as PluginError)."""
        from kubernetes.client.exceptions import ApiException

        try:
            found: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
            return dict(found)
        except ApiException as exc:
            if exc.status == 404:
                return None
            return self.get(plural, ns, name)  # the same call again, for kubectl's error text

    def create(self, plural: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name") or (body.get("metadata") or {}).get("generateName", "")
        obj: dict[str, Any] = self.call(
            f'{plural}.{GROUP} "{name}" in namespace "{ns}"', self.custom.create_namespaced_custom_object,
            GROUP, VERSION, ns, plural, body, field_manager=KUBECTL_FIELD_MANAGER, field_validation="Strict")
        return obj

    def apply(self, plural: str, ns: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as field manager kubectl-remedy (taking over conflicting fields, as
        ``kubectl apply --server-side --force-conflicts`` does: the person applies this file)."""
        name = body["metadata"]["name"]
        obj: dict[str, Any] = self.call(
            f'{plural}.{GROUP} "{name}" in namespace "{ns}"', self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, ns, plural, name, body, field_manager=KUBECTL_FIELD_MANAGER, force=True,
            field_validation="Strict", dry_run="All" if dry_run else None,
            _content_type="application/apply-patch+yaml")
        if not isinstance(obj, dict):  # 201 Created: the generated client maps only 200 to a body
            return self.get(plural, ns, name)
        return obj

    def events_for(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        meta = obj.get("metadata") or {}
        selector = f"involvedObject.name={meta.get('name')}"
        if meta.get("uid"):
            selector += f",involvedObject.uid={meta['uid']}"
        res = self.call("events", self.core.list_namespaced_event, meta.get("namespace"), field_selector=selector)
        items = self.api.sanitize_for_serialization(res).get("items") or []
        return [dict(e) for e in items]


def _api_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.body or exc.reason)
    return str(body.get("message") or exc.reason) if isinstance(body, dict) else str(exc.body)
