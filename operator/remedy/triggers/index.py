"""In-memory index of alert-triggered policies, kept current by kopf handlers, so the webhook
can route an alert without listing policies on every request."""

from __future__ import annotations

from typing import Any


class PolicyIndex:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], dict[str, Any]] = {}

    def upsert(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        alert = ((body.get("spec") or {}).get("trigger") or {}).get("alert")
        if alert:
            self._by_key[key] = {"metadata": dict(meta), "spec": body.get("spec"), "alert": alert}
        else:
            self._by_key.pop(key, None)

    def remove(self, namespace: str, name: str) -> None:
        self._by_key.pop((namespace, name), None)

    def matching(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for entry in self._by_key.values():
            alert = entry["alert"]
            if alert.get("alertname") != labels.get("alertname"):
                continue
            if all(labels.get(k) == v for k, v in (alert.get("matchLabels") or {}).items()):
                out.append(entry)
        return out

    def __len__(self) -> int:
        return len(self._by_key)
