"""Alertmanager silences that live exactly as long as a child Remediation runs.

A policy with spec.silence stamps its children with the rendered silence (ANN_SILENCE). From
the children's watch events this keeper creates the silence as soon as a child exists (its
first watch event is handled before the action starts: kopf processes one object's events in
order, and a running action holds that object's queue, so "when it starts running" cannot be
observed in time) and expires it when the child reaches a final phase. Dry runs get none.

Never leave one behind: every silence carries the child's identity in its comment
(``[remedy-child ns/name uid=...]``), so expiry finds silences by identity, not by a
remembered id; and a sweep (at startup and periodically) expires every remedy silence whose
child is final or gone. A crash between creating a silence and recording its id therefore
loses nothing, and the silence's own endsAt (spec.silence.duration) bounds it even if the
operator never comes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import defaultdict
from typing import Any

from ..api.objects import view
from ..base.constants import ANN_SILENCE, ANN_SILENCE_ID, FINAL_PHASES, GROUP, REMEDIATIONS, VERSION
from ..base.errors import RemedyError, RetryableError
from ..clients.alertmanager import CREATED_BY, Alertmanager

log = logging.getLogger("remedy.silences")
_TAG = re.compile(r"\[remedy-child ([^/\s]+)/([^\s]+) uid=([^\]\s]+)\]")


def tag(namespace: str, name: str, uid: str) -> str:
    return f"[remedy-child {namespace}/{name} uid={uid}]"


class SilenceKeeper:
    def __init__(self, kube: Any, alertmanager: Alertmanager, recorder: Any) -> None:
        self.kube = kube
        self.am = alertmanager
        self.recorder = recorder
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def on_child(self, body: dict[str, Any], event_type: str | None = None) -> None:
        meta = body.get("metadata") or {}
        ann = meta.get("annotations") or {}
        if ANN_SILENCE not in ann:
            return
        phase = view(body).phase
        try:
            if phase in FINAL_PHASES or event_type == "DELETED":
                await self.expire_for(meta["namespace"], meta["name"], meta["uid"])
            elif not ann.get(ANN_SILENCE_ID) and not (body.get("spec") or {}).get("dryRun"):
                await self._create(body)
        except RetryableError as exc:
            log.warning("silence for %s/%s: %s (the sweep retries)", meta.get("namespace"), meta.get("name"), exc.message)

    async def _create(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        async with self._locks[meta["uid"]]:
            fresh = await self.kube.get_object(REMEDIATIONS, meta["namespace"], meta["name"])
            if fresh is None or fresh["metadata"]["uid"] != meta["uid"]:
                return
            fann = fresh["metadata"].get("annotations") or {}
            if fann.get(ANN_SILENCE_ID) or view(fresh).phase in FINAL_PHASES:
                return
            spec = json.loads(fann.get(ANN_SILENCE) or "{}")
            if spec.get("error"):
                self.recorder.event(fresh, "Warning", "SilenceNotCreated", f"spec.silence: {spec['error']}")
                await self._annotate(fresh, "none")
                return
            if await self._active_for(meta["namespace"], meta["name"], meta["uid"]):
                return  # created before a crash, id not recorded: the existing one stands
            text = f"{spec.get('comment') or 'remediation in progress'} {tag(meta['namespace'], meta['name'], meta['uid'])}"
            sid = await self.am.create_silence(spec["matchers"], float(spec.get("durationSeconds") or 900), text)
            await self._annotate(fresh, sid)
            self.recorder.event(fresh, "Normal", "Silenced", f"Alertmanager silence {sid} while this runs: {_show(spec['matchers'])}")

    async def _annotate(self, child: dict[str, Any], sid: str) -> None:
        meta = child["metadata"]
        await self.kube.call(f"remediations/{meta['name']} annotate", self.kube.custom.patch_namespaced_custom_object,
                             GROUP, VERSION, meta["namespace"], REMEDIATIONS, meta["name"],
                             {"metadata": {"annotations": {ANN_SILENCE_ID: sid}}})

    async def _active_for(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        want = tag(namespace, name, uid)
        return [s for s in await self.am.silences() if s.get("createdBy") == CREATED_BY and want in str(s.get("comment") or "")
                and (s.get("status") or {}).get("state") in ("active", "pending")]

    async def expire_for(self, namespace: str, name: str, uid: str) -> int:
        async with self._locks[uid]:
            found = await self._active_for(namespace, name, uid)
            for s in found:
                await self.am.expire_silence(str(s["id"]))
            if found:
                log.info("expired %d silence(s) of %s/%s", len(found), namespace, name)
            return len(found)

    async def sweep(self) -> int:
        """Expire remedy's silences whose child is final or gone. Returns how many."""
        expired = 0
        for s in await self.am.silences():
            if s.get("createdBy") != CREATED_BY or (s.get("status") or {}).get("state") not in ("active", "pending"):
                continue
            m = _TAG.search(str(s.get("comment") or ""))
            if m is None:
                continue
            ns, name, uid = m.groups()
            try:
                child = await self.kube.get_object(REMEDIATIONS, ns, name)
            except RemedyError:  # unreachable or not ours to read: leave it to its endsAt
                continue
            if child is None or child["metadata"].get("uid") != uid or view(child).phase in FINAL_PHASES:
                await self.am.expire_silence(str(s["id"]))
                expired += 1
                log.info("sweep expired silence %s of %s/%s", s["id"], ns, name)
        return expired


def _show(matchers: list[dict[str, Any]]) -> str:
    ops = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
    return "{" + ", ".join(f"{m['name']}{ops[(bool(m.get('isRegex')), bool(m.get('isEqual', True)))]}{m['value']!r}" for m in matchers) + "}"
