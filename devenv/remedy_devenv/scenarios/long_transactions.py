"""Runbooks 002/003: checkout sessions hold a row lock idle in transaction and run a long
query; terminatePostgresQueries ends exactly those, a 'reporting' session stays."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from ..demo.stack import Stack
from ..demo.support import DemoError
from .base import Scenario


def inject(st: Stack) -> str:
    import psycopg

    dsn = st.pg.dsn
    holder = psycopg.connect(dsn, application_name="checkout")
    holder.execute("SELECT * FROM reservations WHERE id = 1 FOR UPDATE")  # stays idle in transaction
    reporting = psycopg.connect(dsn, application_name="reporting")
    reporting.execute("SELECT count(*) FROM reservations")  # idle in transaction too, other app
    sleeper = psycopg.connect(dsn, application_name="checkout", autocommit=True)

    def sleep() -> None:
        with contextlib.suppress(Exception):
            sleeper.execute("SELECT pg_sleep(600) /* checkout: reserve stock */")

    threading.Thread(target=sleep, daemon=True).start()

    def close() -> None:
        for c in (holder, reporting, sleeper):
            with contextlib.suppress(Exception):
                c.close()

    st.extra_stops.append(close)
    st.scratch["pg_close"] = close
    return ("checkout holds a row lock idle in transaction + runs pg_sleep(600); "
            "a 'reporting' session is idle in transaction too")


def detect(st: Stack) -> str | None:
    import psycopg

    with psycopg.connect(st.pg.dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT state, extract(epoch FROM now() - coalesce(xact_start, query_start))::int FROM pg_stat_activity "
            "WHERE application_name = 'checkout' AND state IN ('active', 'idle in transaction') "
            "AND now() - coalesce(xact_start, query_start) >= interval '3 seconds'").fetchall()
    if len(rows) < 2:
        return None
    return "symptom: pg_stat_activity shows " + ", ".join(f"checkout {s} for {d}s" for s, d in rows)


def check(st: Stack, obj: dict[str, Any]) -> str:
    import psycopg

    with psycopg.connect(st.pg.dsn, autocommit=True) as c:
        rows = c.execute("SELECT application_name, state FROM pg_stat_activity "
                         "WHERE application_name IN ('checkout', 'reporting')").fetchall()
    busy = [r for r in rows if r[0] == "checkout" and r[1] in ("active", "idle in transaction")]
    reporting = [r for r in rows if r[0] == "reporting" and r[1] == "idle in transaction"]
    if busy or not reporting:
        raise DemoError(f"pg_stat_activity after: {rows}")
    res = obj.get("status", {}).get("result") or {}
    return f"{res.get('summary') or 'checkout backends cancelled/terminated'}; 'reporting' untouched"


def cleanup(st: Stack) -> None:
    close = st.scratch.get("pg_close")
    if close:
        close()


SCENARIO = Scenario(
    "long-transactions", "002/003", "checkout transactions holding locks", "kubectl apply", "terminatePostgresQueries",
    inject, [("symptom", detect)], check, remediation="terminate-checkout-transactions", cleanup=cleanup)
