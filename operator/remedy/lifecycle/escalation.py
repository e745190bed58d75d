"""Escalation when an outcome stays unknown: a person must look at the target.

Why a module: when ``observe`` answers CannotTell (e.g. an HTTP endpoint declared without
idempotency support lost its answer), the lifecycle ends the Remediation Failed/OutcomeUnknown and
must not act again; the only safe next step is telling a human. The lifecycle always posts a
Warning Event ``EscalationRequired``; this adds a Slack-compatible webhook
(``REMEDY_ESCALATION_WEBHOOK``), sent with an Idempotency-Key derived from the Remediation uid so
a repeat after an operator restart shows once at a receiver that honours it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

log = logging.getLogger("remedy.escalation")
Escalate = Callable[[dict[str, Any], str], Awaitable[None]]


def webhook(url: str, timeout: float = 10.0) -> Escalate:
    async def escalate(obj: dict[str, Any], message: str) -> None:
        meta = obj.get("metadata") or {}
        text = f"[remedy] {meta.get('namespace')}/{meta.get('name')}: outcome unknown, a person must check: {message}"
        body = {"text": text[:4000], "remediation": f"{meta.get('namespace')}/{meta.get('name')}",
                "reason": "OutcomeUnknown"}
        headers = {"Idempotency-Key": f"remedy-escalation-{meta.get('uid')}"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                    session.post(url, json=body, headers=headers, allow_redirects=False) as resp:
                if resp.status >= 300:
                    log.warning("escalation webhook answered %s", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("escalation webhook failed: %s", type(exc).__name__)

    return escalate
