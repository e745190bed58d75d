"""`kubectl remedy describe NAME --keys`: the full key list of a bulk action, re-derived now.

Why: status holds only counts, the first 20 keys and a digest, so the full list must come from
the rule itself, read with the person's own credentials (the plugin reads the Secret as them).
Real control plane (the Remediation and Secret live in the API server), real redis-server.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest
import redis
from kubernetes import client

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.services import RedisServer
from tests.e2e.test_kubectl_plugin import ok, remedy
from tests.fixtures.operator import GROUP, VERSION

pytestmark = pytest.mark.cluster


def create(api: client.ApiClient, ns: str, name: str, action: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation", "metadata": {"name": name},
            "spec": {"dryRun": True, "action": action}}
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)


def test_describe_keys_rederives_every_key(control_plane: ControlPlane, kube_admin: client.ApiClient, crds: None,
                                           namespace: str, redis_server: RedisServer) -> None:
    client.CoreV1Api(kube_admin).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="redis"), data={"url": base64.b64encode(redis_server.url.encode()).decode()}))
    tag = uuid.uuid4().hex[:8]
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    locks = {f"lock:{tag}:purchase:{i}" for i in range(57)}  # more than the 20 status keeps
    r.mset(dict.fromkeys(locks, "v") | {f"lock:{tag}x:other": "v"})
    now = time.time()
    stale = {f"idem:{tag}:s{i}" for i in range(30)}
    for k in stale:
        r.hset(k, mapping={"state": "in_progress", "lock_expires_at": str(now - 600)})
    r.hset(f"idem:{tag}:fresh", mapping={"state": "in_progress", "lock_expires_at": str(now + 600)})
    conn = {"urlSecretRef": {"name": "redis", "key": "url"}}
    create(kube_admin, namespace, "del", {"deleteRedisKeys": {"connection": conn, "pattern": f"lock:{tag}:*"}})
    create(kube_admin, namespace, "purge", {"purgeIdempotencyKeys": {
        "backend": "redis", "redis": {"connection": conn, "pattern": f"idem:{tag}:*"}}})
    create(kube_admin, namespace, "other", {"notify": {"message": "hi"}})

    res = remedy(control_plane, "describe", "del", "-n", namespace, "--keys")
    assert set(ok(res).splitlines()) == locks and len(res.stdout.splitlines()) == 57
    assert "57 key(s)" in res.stderr
    assert set(ok(remedy(control_plane, "describe", "purge", "-n", namespace, "--keys")).splitlines()) == stale
    bad = remedy(control_plane, "describe", "other", "-n", namespace, "--keys")
    assert bad.returncode == 1 and "does not act on a key set" in bad.stderr
    assert redis_server.password not in bad.stderr + res.stderr
    r.close()
