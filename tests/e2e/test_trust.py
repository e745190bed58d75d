"""Issue 12, engine side, on the real control plane: ambiguous outcomes are observed and never
re-planned, workload writes carry preconditions and never overwrite a person's edit, the
attempt count and reasons are honest, finished objects follow their generation, Events carry
microsecond eventTime, the policy status has one writer, and a firing after a seen resolve is
a new episode.

Most tests run the engine in this process (``Lifecycle`` / ``Policies`` with the real
``KubeClient``) because they need its ``hooks`` seam or a client whose answer is lost after the
API server applied the write. The API server is real in every case; the lost answer is produced
by ``LosingKube``, which forwards the write and then drops the response, exactly what the fault
proxy of tests/reliability/test_faults.py does on the wire.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client

from remedy.actions.base import ActionContext
from remedy.actions.registry import REGISTRY
from remedy.base.errors import AmbiguousOutcomeError, RetryableError
from remedy.clients.kube import KubeClient
from remedy.lifecycle.machine import Lifecycle
from remedy.policies.firing import Firing
from remedy.policies.machinery import Policies
from remedy.triggers import prometheus
from remedy_devenv.cluster import ControlPlane
from remedy_devenv.operator import OperatorProcess
from tests.e2e.test_lifecycle import make_deployment, replicasets
from tests.fixtures.cluster import api_client_for
from tests.fixtures.helpers import wait_for
from tests.fixtures.operator import GROUP, VERSION, condition, create_rem, get_rem, make_namespace, wait_phase

pytestmark = pytest.mark.cluster

REVISION = "deployment.kubernetes.io/revision"


class Events:
    """Recorder: keeps (reason, message) in memory for assertions and posts the real Event."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.seen: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.seen.append((reason, message))
        task = asyncio.get_running_loop().create_task(self.kube.post_event(obj, type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reasons(self) -> list[str]:
        return [r for r, _ in self.seen]


class LosingKube(KubeClient):
    """The real client; ``lose`` decides per mutating call whether its answer is lost after the
    API server applied it ("forward"), or the request is lost before it ("drop")."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.plan: list[str] = []  # one entry per mutating call, consumed in order
        self.mutations = 0

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, mutating: bool = False, **kwargs: Any) -> Any:
        if not mutating:
            return await super().call(what, fn, *args, **kwargs)
        self.mutations += 1
        fault = self.plan.pop(0) if self.plan else ""
        if fault == "drop":
            raise AmbiguousOutcomeError(f"connection reset during {what} (request lost before the server)")
        result = await super().call(what, fn, *args, mutating=True, **kwargs)
        if fault == "hang":  # applied, and then the answer never comes (bounded only by spec.timeout)
            await asyncio.sleep(3600)
        if fault == "forward":
            raise AmbiguousOutcomeError(f"504 Gateway Timeout on {what} after the server applied it")
        return result


@pytest.fixture
async def kube(control_plane: ControlPlane, crds: None) -> AsyncIterator[LosingKube]:
    api = api_client_for(control_plane.admin_kubeconfig)
    yield LosingKube(api)
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def own_ns(kube_admin: client.ApiClient) -> Any:
    """A namespace the module's operator (watching t-*) does not watch: the engine under test
    here is the only one acting in it."""
    name = make_namespace(kube_admin, "e")
    yield name
    client.CoreV1Api(kube_admin).delete_namespace(name)


def engine_for(kube: KubeClient, events: Events, **kwargs: Any) -> Lifecycle:
    def context_factory(obj: dict[str, Any]) -> ActionContext:
        meta = obj["metadata"]
        return ActionContext(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], kube=kube)

    return Lifecycle(store=kube, recorder=events, registry=REGISTRY, context_factory=context_factory,
                  heartbeat_interval=1.0, **kwargs)


async def drive(engine: Lifecycle, ns: str, name: str, limit: int = 12) -> str | None:
    """What kopf does: call reconcile again after each RetryableError (without its backoff)."""
    for _ in range(limit):
        try:
            phase = await engine.reconcile(ns, name)
        except RetryableError:
            await asyncio.sleep(0.2)
            continue
        if phase in ("Succeeded", "Failed", "Skipped"):
            return phase
    return None


def two_revisions(api: client.ApiClient, ns: str, name: str) -> None:
    """rev 1 good (example/app:1), rev 2 bad (example/app:2-bad)."""
    apps = client.AppsV1Api(api)
    make_deployment(api, ns, name)
    wait_for(lambda: len(replicasets(api, ns, name)) == 1, what="rev 1")
    apps.patch_namespaced_deployment(name, ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:2-bad"}]}}}})
    wait_for(lambda: (apps.read_namespaced_deployment(name, ns).metadata.annotations or {}).get(REVISION) == "2",
             what="rev 2")


def image(api: client.ApiClient, ns: str, name: str) -> str:
    return str(client.AppsV1Api(api).read_namespaced_deployment(name, ns).spec.template.spec.containers[0].image)


# --- 1. ambiguous outcomes are observed, never re-planned ---------------------------------------


async def test_lost_answer_of_a_rollback_never_rolls_forward(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """The report of the issue: the PATCH is applied, its answer lost (504). Re-planning would
    take the good revision as "current" and roll forward to the bad one; observing sees the
    planned template and goes on to verification."""
    two_revisions(kube_admin, own_ns, "api")
    create_rem(kube_admin, own_ns, "undo", {"action": {"rollbackWorkload": {"target": {"name": "api"}}}})
    events = Events(kube)
    kube.plan = ["forward"]
    assert await drive(engine_for(kube, events), own_ns, "undo") == "Succeeded"
    obj = get_rem(kube_admin, own_ns, "undo")
    assert obj["status"]["result"]["outcomeObserved"] == "Applied"
    assert obj["status"]["result"]["images"] == ["example/app:1"]
    assert obj["status"]["plan"]["toRevision"] == 1 and obj["status"]["attempts"] == 1
    assert kube.mutations == 1, "the rollback was sent again"
    assert "ObservedApplied" in events.reasons() and "OutcomeUnknown" in events.reasons()
    await asyncio.sleep(1.0)  # let the deployment controller settle: no rev 4 may appear
    assert image(kube_admin, own_ns, "api") == "example/app:1"
    assert (client.AppsV1Api(kube_admin).read_namespaced_deployment("api", own_ns).metadata.annotations or {})[REVISION] == "3"


async def test_lost_answer_of_a_scale_by_delta_applies_it_once(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    make_deployment(kube_admin, own_ns, "web", replicas=2)
    create_rem(kube_admin, own_ns, "up", {"action": {"scaleWorkload": {"target": {"name": "web"}, "delta": 1}}})
    kube.plan = ["forward"]
    assert await drive(engine_for(kube, Events(kube)), own_ns, "up") == "Succeeded"
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", own_ns).spec.replicas == 3
    assert kube.mutations == 1


async def test_request_lost_before_the_server_reapplies_the_recorded_plan(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """NotApplied: the same recorded plan is sent again (attempt 2), never a new plan."""
    two_revisions(kube_admin, own_ns, "api")
    create_rem(kube_admin, own_ns, "undo", {"action": {"rollbackWorkload": {"target": {"name": "api"}}}})
    events = Events(kube)
    kube.plan = ["drop"]
    assert await drive(engine_for(kube, events), own_ns, "undo") == "Succeeded"
    obj = get_rem(kube_admin, own_ns, "undo")
    assert obj["status"]["attempts"] == 2 and kube.mutations == 2
    assert "ReApplying" in events.reasons()
    assert image(kube_admin, own_ns, "api") == "example/app:1"


async def test_lost_answer_of_a_memory_raise_is_observed(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    from tests.e2e.test_lifecycle import pods_oom

    make_deployment(kube_admin, own_ns, "inv", memory="256Mi")
    pods_oom(kube_admin, own_ns, "inv")
    create_rem(kube_admin, own_ns, "mem", {"action": {"raiseMemoryOnOOM": {"target": {"name": "inv"}, "factor": 1.5,
                                                                              "maxLimit": "2Gi"}}})
    kube.plan = ["forward"]
    assert await drive(engine_for(kube, Events(kube)), own_ns, "mem") == "Succeeded"
    dep = client.AppsV1Api(kube_admin).read_namespaced_deployment("inv", own_ns)
    assert dep.spec.template.spec.containers[0].resources.limits["memory"] == "384Mi"
    assert kube.mutations == 1


async def test_spec_timeout_cancels_a_hung_call_and_says_what_happened(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """The write is applied but its answer never comes: spec.timeout (2s) cancels the attempt,
    and the engine observes the target instead of guessing: applied, not verified."""
    make_deployment(kube_admin, own_ns, "web", replicas=2)
    create_rem(kube_admin, own_ns, "up", {"timeout": "2s", "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 4}}})
    kube.plan = ["hang"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await drive(engine_for(kube, Events(kube)), own_ns, "up") == "Failed"
    assert loop.time() - started < 30
    obj = get_rem(kube_admin, own_ns, "up")
    assert condition(obj, "Completed")["reason"] == "Timeout"
    assert "observed applied" in obj["status"]["message"] and condition(obj, "Executed")["status"] == "True"
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", own_ns).spec.replicas == 4
    assert kube.mutations == 1


async def test_unkeyed_http_call_with_a_lost_answer_escalates_and_is_not_resent(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """CannotTell: an endpoint declared without idempotency support answers too late. The call is
    not sent again; the Remediation ends OutcomeUnknown, an EscalationRequired Event is posted and
    the escalation webhook is told once (the receivers here count what arrives)."""
    from aiohttp import web

    from remedy.lifecycle import escalation

    arrived: dict[str, list[Any]] = {"slow": [], "escalate": []}

    async def slow(request: web.Request) -> web.Response:
        arrived["slow"].append(request.headers.get("Idempotency-Key"))
        await asyncio.sleep(2)
        return web.json_response({"ok": True})

    async def escalate(request: web.Request) -> web.Response:
        arrived["escalate"].append((request.headers.get("Idempotency-Key"), await request.json()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/escalate", escalate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        obj = create_rem(kube_admin, own_ns, "cron", {"action": {"httpRequest": {
            "url": f"http://127.0.0.1:{port}/slow", "timeout": "300ms", "idempotencyKey": False}}})
        events = Events(kube)
        engine = engine_for(kube, events, escalate=escalation.webhook(f"http://127.0.0.1:{port}/escalate"))
        assert await drive(engine, own_ns, "cron") == "Failed"
        await asyncio.sleep(2.5)
    finally:
        await runner.cleanup()
    done = get_rem(kube_admin, own_ns, "cron")
    assert condition(done, "Completed")["reason"] == "OutcomeUnknown"
    assert "idempotencyKey: false" in done["status"]["message"]
    assert arrived["slow"] == [None], "sent twice, or sent with a key it was declared not to honour"
    assert "EscalationRequired" in events.reasons()
    assert [k for k, _ in arrived["escalate"]] == [f"remedy-escalation-{obj['metadata']['uid']}"]
    assert arrived["escalate"][0][1]["reason"] == "OutcomeUnknown"


# --- 2. preconditions: a person's edit between plan and execute is never overwritten ----------


async def test_human_edit_between_plan_and_execute_is_not_overwritten(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    two_revisions(kube_admin, own_ns, "api")
    create_rem(kube_admin, own_ns, "undo", {"action": {"rollbackWorkload": {"target": {"name": "api"}}}})
    apps = client.AppsV1Api(kube_admin)

    async def person_fixes_it_by_hand(obj: dict[str, Any]) -> None:
        if image(kube_admin, own_ns, "api") != "example/app:3-hotfix":
            apps.patch_namespaced_deployment("api", own_ns, {"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "example/app:3-hotfix"}]}}}})

    events = Events(kube)
    phase = await drive(engine_for(kube, events, hooks={"after_intent": person_fixes_it_by_hand}), own_ns, "undo")
    obj = get_rem(kube_admin, own_ns, "undo")
    assert phase == "Skipped" and condition(obj, "Completed")["reason"] == "TargetChanged", obj["status"]["message"]
    changed = [m for r, m in events.seen if r == "TargetChanged"]
    assert changed and "metadata.generation" in changed[0] and "edited" in changed[0]
    assert image(kube_admin, own_ns, "api") == "example/app:3-hotfix"


async def test_scale_after_a_human_scale_builds_on_it(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    make_deployment(kube_admin, own_ns, "web", replicas=2)
    create_rem(kube_admin, own_ns, "up", {"action": {"scaleWorkload": {"target": {"name": "web"}, "delta": 1}}})
    apps = client.AppsV1Api(kube_admin)
    done: list[bool] = []

    async def person_scales(obj: dict[str, Any]) -> None:
        if not done:
            done.append(True)
            apps.patch_namespaced_deployment("web", own_ns, {"spec": {"replicas": 6}})

    events = Events(kube)
    assert await drive(engine_for(kube, events, hooks={"after_intent": person_scales}), own_ns, "up") == "Succeeded"
    assert apps.read_namespaced_deployment("web", own_ns).spec.replicas == 7  # 6 (the person's) + 1, not 3
    msg = next(m for r, m in events.seen if r == "TargetChanged")
    assert "spec.replicas was 2 at plan time, now 6" in msg
    assert get_rem(kube_admin, own_ns, "up")["status"]["plan"]["from"] == 6


def test_workload_writes_are_owned_by_field_manager_remedy(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=1)
    create_rem(kube_admin, namespace, "s", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}})
    wait_phase(kube_admin, namespace, "s", "Succeeded")
    managed = client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace).metadata.managed_fields
    assert any(m.manager == "remedy" and "f:replicas" in str(m.fields_v1) for m in managed)


# --- 8. honest status -------------------------------------------------------------------------


async def test_retries_exhausted_message_matches_attempts(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """Every plan fails transiently (the target's reads are refused): the final message states
    the attempts status records, and the reason says it is final, not TransientError."""
    make_deployment(kube_admin, own_ns, "web", replicas=1)
    create_rem(kube_admin, own_ns, "s", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}})

    class Flaky(LosingKube):
        async def call(self, what: str, fn: Callable[..., Any], *args: Any, mutating: bool = False, **kwargs: Any) -> Any:
            if what.startswith("Deployment "):
                raise RetryableError(f"API server error 503 on {what}", reason="APIUnavailable")
            return await super().call(what, fn, *args, mutating=mutating, **kwargs)

    flaky = Flaky(kube.api_client)
    assert await drive(engine_for(flaky, Events(flaky), max_attempts=3), own_ns, "s") == "Failed"
    st = get_rem(kube_admin, own_ns, "s")["status"]
    assert st["attempts"] == 3 and f"gave up after {st['attempts']} attempts" in st["message"]
    assert condition(get_rem(kube_admin, own_ns, "s"), "Completed")["reason"] == "RetriesExhausted"


def test_editing_a_finished_remediation_is_refused_and_status_stays(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    """Issue 20: the spec is frozen once remedy has started (the validating admission policy),
    for everyone, so a finished object's spec keeps saying what ran. Before that the engine only
    moved observedGeneration on such an edit (it still does where the policy is not installed)."""
    make_deployment(kube_admin, namespace, "web", replicas=1)
    create_rem(kube_admin, namespace, "s", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}})
    before = wait_phase(kube_admin, namespace, "s", "Succeeded")
    with pytest.raises(client.ApiException) as err:
        client.CustomObjectsApi(kube_admin).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "remediations", "s", {"spec": {"reason": "INC-42 postmortem"}})
    assert err.value.status == 403 and "frozen once remedy has started on it (phase Succeeded)" in err.value.body
    obj = get_rem(kube_admin, namespace, "s")
    assert obj["metadata"]["generation"] == before["metadata"]["generation"] == obj["status"]["observedGeneration"]
    assert obj["status"]["attempts"] == before["status"]["attempts"]
    assert obj["status"]["completedAt"] == before["status"]["completedAt"]
    # Argo CD's view of the live object (deploy/argocd health.lua in gopher-lua): Healthy again.
    completed = condition(obj, "Completed")["message"]
    assert argocd_health(obj) == ("Healthy", f"Succeeded: {completed}")
    gen = obj["metadata"]["generation"]
    stale = {**obj, "status": {**obj["status"], "observedGeneration": gen - 1}}  # what the issue saw
    assert argocd_health(stale) == (
        "Progressing", f"Waiting for remedy to observe generation {gen} (status is for generation {gen - 1})")


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the Remediation health check for ``obj``: the runner accepts the
    expectation read back from a first run that states a deliberately wrong one."""
    import json
    import re
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    build = subprocess.run([str(root / "scripts" / "build-luahealth")], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr
    runner = build.stdout.strip().splitlines()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        shutil.copy(root / "deploy/argocd/resource_customizations/remedy.dev/Remediation/health.lua", d / "health.lua")
        (d / "testdata").mkdir()
        (d / "testdata" / "live.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(obj))))

        def check(status: str, message: str) -> subprocess.CompletedProcess[str]:
            test = {"tests": [{"healthStatus": {"status": status, "message": message}, "inputPath": "testdata/live.yaml"}]}
            (d / "health_test.yaml").write_text(yaml.safe_dump(test))
            return subprocess.run([runner, str(d / "health_test.yaml")], capture_output=True, text=True, timeout=60)

        probe = check("Unknown", "?")  # the runner's diff says what it actually got
        got_status = re.search(r'^\s*\+ status:\s+"(.*)"$', probe.stdout, re.M)
        got_message = re.search(r'^\s*\+ message:\s+"(.*)"$', probe.stdout, re.M)
        assert got_status and got_message, probe.stdout + probe.stderr
        status, message = got_status.group(1), json.loads(f'"{got_message.group(1)}"')
        confirmed = check(status, message)
        assert confirmed.returncode == 0 and " 0 failed" in confirmed.stdout, confirmed.stdout + confirmed.stderr
        return status, message


def test_events_have_microsecond_event_time_in_order(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=1)
    obj = create_rem(kube_admin, namespace, "s", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}})
    wait_phase(kube_admin, namespace, "s", "Succeeded")
    core = client.CoreV1Api(kube_admin)

    def mine() -> list[Any]:
        items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.uid={obj['metadata']['uid']}").items
        return items if {"Accepted", "Started", "Succeeded"} <= {e.reason for e in items} else []

    items = wait_for(mine, timeout=20, what="Events of the Remediation")
    # Written through events.k8s.io/v1: eventTime (MicroTime) set, no whole-second firstTimestamp.
    assert all(e.event_time is not None and e.reporting_component == "remedy.dev/operator" for e in items)
    ordered = [e.reason for e in sorted(items, key=lambda e: e.event_time)]
    assert ordered.index("Accepted") < ordered.index("Started") < ordered.index("Succeeded")
    assert any(e.event_time.microsecond % 1000 for e in items), "eventTime has no sub-millisecond part"


# --- 4. one writer for the policy status --------------------------------------------------------


def policy_body(name: str, trigger: dict[str, Any], action: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name},
            "spec": {"trigger": trigger, "template": {"action": action}, **spec}}


def create_policy(api: client.ApiClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "remediationpolicies", body)
    return obj


def get_policy(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", name)
    return obj


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def test_prometheus_poller_and_alert_handling_lose_nothing(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """The poller used to merge-patch conditions computed from the policy it read at the start of
    its poll. Here it writes after a refresh paused the policy, from that stale read, and then
    races 20 firings and refreshes: Paused survives, Degraded from the poller is there, and every
    firing is counted."""
    name = "race"
    create_policy(kube_admin, own_ns, policy_body(
        name, {"prometheus": {"query": "up == 0", "interval": "1s"}},
        {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}, paused=True,
        guards={"maxPerHour": 1000, "maxConcurrent": 1000, "cooldown": "0s"}))
    engine = Policies(kube, Events(kube), REGISTRY)
    stale = get_policy(kube_admin, own_ns, name)
    await engine.refresh(own_ns, name)  # writes Paused=True
    assert cond(get_policy(kube_admin, own_ns, name), "Paused").get("status") == "True"
    await prometheus.poll_once(engine, stale, None)  # Degraded/NoPrometheus, from a stale read
    after = get_policy(kube_admin, own_ns, name)
    assert cond(after, "Paused").get("status") == "True", "the poller overwrote the Paused condition"
    assert cond(after, "Degraded").get("reason") == "NoPrometheus"

    async def poller() -> None:
        for _ in range(20):
            await prometheus.poll_once(engine, get_policy(kube_admin, own_ns, name), "http://127.0.0.1:9")

    async def alerts() -> None:
        for i in range(20):
            await engine.fire(get_policy(kube_admin, own_ns, name), Firing(f"fp{i}", "2026-01-01T00:00:00Z", {}, {}))
            await engine.refresh(own_ns, name)

    await asyncio.gather(poller(), alerts())
    await engine.refresh(own_ns, name)
    final = get_policy(kube_admin, own_ns, name)
    assert final["status"]["counters"]["fired"] == 20
    assert final["status"]["counters"]["blockedPaused"] == 20
    assert cond(final, "Paused").get("status") == "True"
    assert cond(final, "Degraded").get("reason") == "PrometheusUnavailable"


async def test_template_error_keeps_ready_false_until_a_render_succeeds(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    name = "tmpl"
    create_policy(kube_admin, own_ns, policy_body(
        name, {"alert": {"alertname": "Down"}},
        {"scaleWorkload": {"target": {"name": "{{ labels.deployment }}"}, "replicas": 2}},
        guards={"cooldown": "0s"}))
    engine = Policies(kube, Events(kube), REGISTRY)
    await engine.refresh(own_ns, name)
    assert cond(get_policy(kube_admin, own_ns, name), "Ready").get("status") == "True"
    outcome = await engine.fire(get_policy(kube_admin, own_ns, name), Firing("fp", "2026-01-01T00:00:00Z", {"alertname": "Down"}, {}))
    assert outcome == "error:TemplateError"
    for _ in range(3):
        await engine.refresh(own_ns, name)
    assert cond(get_policy(kube_admin, own_ns, name), "Ready").get("reason") == "TemplateError"
    ok = await engine.fire(get_policy(kube_admin, own_ns, name),
                           Firing("fp2", "2026-01-01T00:00:00Z", {"alertname": "Down", "deployment": "web"}, {}))
    assert ok == "created"
    await engine.refresh(own_ns, name)
    assert cond(get_policy(kube_admin, own_ns, name), "Ready").get("status") == "True"


# --- 8. episodes --------------------------------------------------------------------------------


async def test_flapping_alert_with_kept_starts_at_is_one_child_per_episode(kube: LosingKube, kube_admin: client.ApiClient, own_ns: str) -> None:
    """Ten fire/resolve episodes with the same startsAt (as a real Alertmanager may send), sent
    through the webhook: one child per episode until maxPerHour (5), resends within an episode
    deduplicated."""
    import aiohttp

    from remedy.triggers import alertmanager
    from remedy.triggers.index import PolicyIndex

    name = "flap"
    policy = create_policy(kube_admin, own_ns, policy_body(
        name, {"alert": {"alertname": "Flap"}},
        {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}},
        guards={"cooldown": "0s", "maxPerHour": 5, "maxConcurrent": 10}))
    engine = Policies(kube, Events(kube), REGISTRY)
    index = PolicyIndex()
    index.upsert(policy)
    app = alertmanager.make_app(engine, index, alertmanager.TokenSource(None), 1 << 20, require_token=False)
    runner = await alertmanager.serve(app, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    alert = {"labels": {"alertname": "Flap", "namespace": own_ns}, "startsAt": "2026-01-01T00:00:00Z",
             "fingerprint": f"flap-{uuid.uuid4().hex[:6]}"}
    outcomes: list[dict[str, int]] = []
    try:
        async with aiohttp.ClientSession() as http:
            async def send(status: str) -> None:
                body = {"version": "4", "status": status, "alerts": [{**alert, "status": status}]}
                async with http.post(f"http://127.0.0.1:{port}/alertmanager", json=body) as r:
                    assert r.status == 200
                    outcomes.append((await r.json())["outcomes"])

            for _ in range(10):
                await send("firing")
                await send("firing")  # a resend within the episode
                await send("resolved")
    finally:
        await runner.cleanup()
    children = client.CustomObjectsApi(kube_admin).list_namespaced_custom_object(
        GROUP, VERSION, own_ns, "remediations", label_selector=f"remedy.dev/policy={name}")["items"]
    created = sum(o.get("created", 0) for o in outcomes)
    assert created == len(children) == 5
    assert sum(o.get("blocked:rate", 0) for o in outcomes) == 10  # episodes 6..10, fire + resend
    assert sum(o.get("deduplicated", 0) for o in outcomes) == 5  # the resend of each created episode
    assert len({c["metadata"]["name"] for c in children}) == 5
    assert all(c["metadata"]["annotations"].get("remedy.dev/alert-resolved-at") for c in children)
