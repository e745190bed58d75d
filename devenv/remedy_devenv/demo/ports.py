"""The demo's ports: docs/ports.md defaults (or REMEDY_* overrides), a free one where taken."""

from __future__ import annotations

import os
import socket

from ..testkit import free_port

# docs/ports.md: name -> (env override, default)
PORTS: dict[str, tuple[str | None, int]] = {
    "etcd": ("REMEDY_ETCD_PORT", 23790),
    "apiserver": ("REMEDY_APISERVER_PORT", 16443),
    "controller-manager": ("REMEDY_KCM_PORT", 16444),
    "redis": ("REMEDY_REDIS_PORT", 16379),
    "postgres": ("REMEDY_PG_PORT", 15432),
    "mongo": ("REMEDY_MONGO_PORT", 27117),
    "prometheus": ("REMEDY_PROM_PORT", 19090),
    "alertmanager": ("REMEDY_AM_PORT", 19093),
    "gateway": (None, 18000),
    "orders": (None, 18001),
    "payments": (None, 18002),
    "inventory": (None, 18003),
    "reconcile": (None, 18005),
    "webhook": ("REMEDY_WEBHOOK_PORT", 18080),
    "metrics": ("REMEDY_METRICS_PORT", 18081),
    "liveness": (None, 18082),
}


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports() -> tuple[dict[str, int], list[str]]:
    """Every name in PORTS mapped to a port; plus "name want->got" for each one that moved."""
    ports: dict[str, int] = {}
    moved: list[str] = []
    used: set[int] = set()
    for name, (env, default) in PORTS.items():
        want = int(os.environ.get(env) or default) if env else default
        ok = want not in used and port_free(want)
        if name == "etcd":  # etcd's peer port is client + 10
            ok = ok and want + 10 not in used and port_free(want + 10)
        port = want
        while not ok:
            port = free_port()
            ok = port not in used and (name != "etcd" or (port + 10 not in used and port_free(port + 10)))
        if port != want:
            moved.append(f"{name} {want}->{port}")
        ports[name] = port
        used.add(port)
        if name == "etcd":
            used.add(port + 10)
    return ports, moved
