"""Realistic Alertmanager webhook payloads (version 4), for sizing and fuzzing the receiver.

Shaped like what Alertmanager sends for a big group: one entry per alert with a typical label
set (alertname, severity, namespace, pod, container, instance, job, service, cluster, region),
two annotations with a sentence each, a generatorURL carrying the PromQL expression, and the
group/common fields before ``alerts`` (field order as Alertmanager marshals it: groupKey comes
early, which is what lets the receiver log it from the first bytes of an oversized body).
"""

from __future__ import annotations

import json
import random
from typing import Any


def alert(i: int, rng: random.Random) -> dict[str, Any]:
    pod = f"checkout-{rng.getrandbits(32):08x}-{rng.getrandbits(20):05x}"
    labels = {
        "alertname": "KubePodCrashLooping", "severity": "warning", "namespace": "shop", "pod": pod,
        "container": "checkout", "instance": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:8080",
        "job": "kube-state-metrics", "service": "checkout", "cluster": "prod-eu-1", "region": "eu-west-1",
    }
    return {
        "status": "firing", "labels": labels,
        "annotations": {
            "summary": f"Pod shop/{pod} is crash looping",
            "description": f"Pod shop/{pod} (checkout) is restarting 2.5 times / 10 minutes.",
        },
        "startsAt": "2026-11-30T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.monitoring:9090/graph?g0.expr=max_over_time%28kube_pod_container_status_"
                        "waiting_reason%7Breason%3D%22CrashLoopBackOff%22%7D%5B5m%5D%29+%3E%3D+1&g0.tab=1",
        "fingerprint": f"{rng.getrandbits(64):016x}",
    }


def group(n: int, seed: int, group_key: str = '{}:{alertname="KubePodCrashLooping"}') -> dict[str, Any]:
    rng = random.Random(seed)
    return {
        "version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": "firing", "receiver": "remedy",
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {"alertname": "KubePodCrashLooping", "severity": "warning"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.monitoring:9093",
        "alerts": [alert(i, rng) for i in range(n)],
    }


def encoded(n: int, seed: int, group_key: str = '{}:{alertname="KubePodCrashLooping"}') -> bytes:
    return json.dumps(group(n, seed, group_key)).encode()


if __name__ == "__main__":
    for n in (5_000, 10_000):
        print(n, len(encoded(n, 1)))
