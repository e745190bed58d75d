"""Namespace discovery with globs: every namespace kopf's namespace watch lists is counted.

Why this exists (issue 21): with ``-n 't-*'`` kopf discovers matching namespaces itself. It lists
the namespaces once, then starts a watch, and that watch begins with its own listing, whose
items arrive as events of type None; kopf's ``process_discovered_namespace_event`` drops those
(``if raw_event['type'] is None: return``). A namespace created after the first listing and
before the watch's listing is therefore never added: its Remediations are not watched until
something else touches the namespace object. The same happens to every namespace created
while the watch re-lists after a "410 Gone". Namespace creation and a Remediation in it are one
gesture for a person (and for tests created right after the operator is ready), so this gap
shows up as a Remediation that waits for no visible reason.

The fix keeps kopf's own bookkeeping and only stops the drop: a listed namespace is revised
exactly like the first listing's (``revise_namespaces`` adds it when it matches a pattern;
adding a known one is a no-op). ``install()`` must run before ``kopf.run`` (cli.py calls it).
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    from kopf._core.reactor import observation

    original = observation.process_discovered_namespace_event
    if getattr(original, "remedy_counts_listings", False):
        return

    async def process_discovered_namespace_event(*, raw_event: Any, namespaces: Any, insights: Any, **kwargs: Any) -> None:
        if raw_event["type"] is not None:
            await original(raw_event=raw_event, namespaces=namespaces, insights=insights, **kwargs)
            return
        async with insights.revised:
            observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
            insights.revised.notify_all()

    process_discovered_namespace_event.remedy_counts_listings = True  # type: ignore[attr-defined]
    observation.process_discovered_namespace_event = process_discovered_namespace_event
