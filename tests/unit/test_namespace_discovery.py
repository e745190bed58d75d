"""Issue 21: kopf's namespace watch lists namespaces as events of type None and drops them, so a
namespace created between its first listing and its watch's listing was never watched. With
remedy.runtime.namespaces installed, kopf's own processing adds it (and still ignores
namespaces that do not match, and still removes deleted ones)."""

from __future__ import annotations

from kopf._cogs.structs import references
from kopf._core.reactor import observation

from remedy.runtime import namespaces


def ns(name: str, **meta: object) -> dict[str, object]:
    return {"metadata": {"name": name, **meta}}


async def test_a_listed_namespace_is_discovered() -> None:
    before = observation.process_discovered_namespace_event
    insights = references.Insights()
    await before(raw_event={"type": None, "object": ns("t-before")}, namespaces=["t-*"], insights=insights)
    kopf_drops_it = "t-before" not in insights.namespaces
    namespaces.install()
    namespaces.install()  # idempotent
    process = observation.process_discovered_namespace_event
    await process(raw_event={"type": None, "object": ns("t-listed")}, namespaces=["t-*"], insights=insights)
    await process(raw_event={"type": None, "object": ns("other")}, namespaces=["t-*"], insights=insights)
    await process(raw_event={"type": "ADDED", "object": ns("t-added")}, namespaces=["t-*"], insights=insights)
    assert {"t-listed", "t-added"} <= insights.namespaces and "other" not in insights.namespaces
    await process(raw_event={"type": "DELETED", "object": ns("t-listed")}, namespaces=["t-*"], insights=insights)
    assert "t-listed" not in insights.namespaces
    assert kopf_drops_it or getattr(before, "remedy_counts_listings", False), "kopf no longer drops listings: drop the shim"
