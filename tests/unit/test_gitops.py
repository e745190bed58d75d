"""Attribution of a revert to Argo CD: tracking annotation/label, the last spec writer from
managedFields, and which finished child pauses a policy."""

from __future__ import annotations

from remedy.lifecycle import gitops


def test_application_from_annotation_tracking_then_label_tracking() -> None:
    assert gitops.argo_application({"annotations": {gitops.ARGO_TRACKING_ANNOTATION: "shop-web:apps/Deployment:shop/web"}}) == "shop-web"
    assert gitops.argo_application({"labels": {gitops.ARGO_TRACKING_LABEL: "shop"}}) == "shop"
    assert gitops.argo_application({"labels": {"app": "web"}}) is None


def test_last_writer_ignores_remedy_and_status_writers() -> None:
    meta = {"managed_fields": [
        {"manager": "argocd-controller", "time": "2026-11-30T10:00:00Z", "fields_v1": {"f:spec": {}}},
        {"manager": "remedy", "time": "2026-11-30T10:01:00Z", "fields_v1": {"f:spec": {}}},
        {"manager": "kube-controller-manager", "time": "2026-11-30T10:02:00Z", "subresource": "status", "fields_v1": {"f:status": {}}},
    ]}
    assert gitops.last_writer(meta) == "argocd-controller"
    assert gitops.last_writer({}) is None


def _child(name: str, reason: str, done: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"phase": "Failed", "completedAt": done,
                                                   "conditions": [{"type": "Completed", "status": "True", "reason": reason}]}}


def test_reverted_since_respects_resume() -> None:
    finals = [_child("a", "RevertedByGitOps", "2026-11-30T10:00:00Z"), _child("b", "TargetNotFound", "2026-11-30T10:01:00Z")]
    assert gitops.reverted_since(finals, None)["metadata"]["name"] == "a"  # type: ignore[index]
    assert gitops.reverted_since(finals, "2026-11-30T10:00:30Z") is None  # resumed after it


def test_verification_ends_even_when_the_watch_swallows_its_cancellation() -> None:
    """The demo's chaos-keys flake: redis-py turned the watch's cancellation into a timeout, the
    action mapped it to RetryableError, the watch went on observing every second and the
    Remediation stayed Verifying forever. Verification must end when its checks end."""
    import asyncio
    import time
    from types import SimpleNamespace
    from typing import Any

    from remedy.actions.base import Applied
    from remedy.base.errors import RetryableError

    calls = [0]

    async def observe(ctx: Any, params: Any, plan: Any) -> Applied:
        calls[0] += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise RetryableError("redis unreachable while observing: TimeoutError") from None  # the swallow
        return Applied("nothing matches")

    async def checks() -> None:
        await asyncio.sleep(0.3)

    async def scenario() -> tuple[float, int, int]:
        action: Any = SimpleNamespace(observe=observe)
        started = time.monotonic()
        await gitops.verify_unless_reverted(checks(), action, SimpleNamespace(), None, {}, interval=0.01)
        took = time.monotonic() - started
        after = calls[0]
        await asyncio.sleep(0.3)
        return took, after, calls[0]

    took, after, later = asyncio.run(scenario())
    assert took < gitops.WIND_DOWN_SECONDS, took
    assert after > 0  # the watch did run while the checks ran
    assert later <= after + 1, (after, later)  # and stopped observing once they ended
