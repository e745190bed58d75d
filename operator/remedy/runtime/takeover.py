"""A shard just acquired: its policies are refreshed and its unfinished Remediations driven.

Why a module: kopf does not replay objects whose handlers another replica already ran, so a
replica that takes a shard over (runtime/shards.py) must list and drive that shard itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from ..api.objects import view
from ..base.constants import FINAL_PHASES, POLICIES, REMEDIATIONS
from ..base.errors import RetryableError
from . import shards


async def take_over(memo: kopf.Memo, shard: int, logger: logging.Logger) -> None:
    """A shard just acquired: its policies are refreshed and its unfinished Remediations driven,
    since kopf does not replay objects whose handlers another replica already ran."""
    count = memo.shards.shards

    async def listed(plural: str) -> list[dict[str, Any]]:
        patterns: list[str] | None = getattr(memo, "watched_namespaces", None)
        if patterns is None or any(ch in pat for pat in patterns for ch in "*?!,"):
            # `-n 'team-*'` globs: list cluster-wide and keep what kopf itself would watch
            # (kopf's own matcher, so both agree on exclusions like 'team-*,!team-x').
            from kopf._cogs.structs.references import match_namespace

            items = await memo.kube.list_all_objects(plural, None)
            return [o for o in items if patterns is None
                    or any(match_namespace(o["metadata"]["namespace"], pat) for pat in patterns)]
        found: list[dict[str, Any]] = await memo.kube.list_all_objects(plural, patterns)
        return found

    policies = [p for p in await listed(POLICIES) if shards.shard_of(p["metadata"]["namespace"], count) == shard]
    for p in policies:
        memo.index.upsert(p)
        with contextlib.suppress(Exception):
            await memo.policies.refresh(p["metadata"]["namespace"], p["metadata"]["name"])
    unfinished = [r for r in await listed(REMEDIATIONS)
                  if shards.shard_of(r["metadata"]["namespace"], count) == shard
                  and view(r).phase not in FINAL_PHASES]
    logger.info("shard %s taken over: %d policies refreshed, %d unfinished Remediations to drive",
                shard, len(policies), len(unfinished))
    limit = asyncio.Semaphore(16)

    async def drive(ns: str, name: str) -> None:
        async with limit:
            for _ in range(50):  # bounded: a Remediation still not final is left to its own events
                if not memo.shards.owns(ns):
                    return
                try:
                    phase = await memo.lifecycle.reconcile(ns, name)
                except RetryableError as exc:
                    await asyncio.sleep(max(0.5, exc.delay))
                    continue
                except Exception as exc:  # noqa: BLE001 - one object's failure must not stop the sweep
                    logger.warning("takeover of %s/%s failed: %s", ns, name, exc)
                    return
                if phase is None or phase in FINAL_PHASES or phase == "AwaitingApproval":
                    return
                await asyncio.sleep(1.0)

    await asyncio.gather(*(drive(r["metadata"]["namespace"], r["metadata"]["name"]) for r in unfinished))
