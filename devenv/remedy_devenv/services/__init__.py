"""Start and stop real Redis, PostgreSQL, Prometheus and Alertmanager on loopback.

Why: the integration tests and the demo need the real servers (fakes hide the behaviour the
actions depend on: pg_stat_activity, Redis auth, alert routing), and every caller should start
them the same way, on 127.0.0.1 only, with all state in one directory and nothing touched
outside it. Each server is a `ManagedProcess`: `start()` waits until it answers (raising with
the last log lines if it does not), `stop()` sends the polite signal then SIGKILL, and a pid
file lets a later run (or `scripts/services down`) find and stop it.

Run as a script: `python -m remedy_devenv.services up|down|status [NAME...]`.

One module per server (redis_server, postgres_server, prometheus_server, alertmanager_server)
over ``process.ManagedProcess``; ``cli`` is the command line.
"""

from __future__ import annotations

from ..testkit import HOST as HOST
from ..testkit import free_port as free_port
from .alertmanager_server import AlertmanagerServer
from .cli import NAMES, build, main
from .postgres_server import PostgresServer
from .process import DEFAULT_STATE_DIR, ManagedProcess, ServiceError
from .prometheus_server import PrometheusServer
from .redis_server import RedisServer

__all__ = [
    "DEFAULT_STATE_DIR", "HOST", "NAMES", "AlertmanagerServer", "ManagedProcess", "PostgresServer", "PrometheusServer",
    "RedisServer", "ServiceError", "build", "free_port", "main",
]
