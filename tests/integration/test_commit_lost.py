"""Issue 21 item 5: a commit whose outcome is unknown ends OutcomeUnknown with an escalation,
never Failed as if nothing had happened.

Real PostgreSQL behind a wire-protocol fault proxy (remedy_devenv/pgfaultproxy.py) that lets the
server COMMIT and then resets the client's connection, so the client saw COMMIT go out and no
answer. The row really changed (the server's own view, read directly), and the Remediation,
driven by the real engine with the real postgresStatement action, ends Failed with reason
OutcomeUnknown, an EscalationRequired Event and the escalation hook called, and the statement
is not run again. The same cut on terminatePostgresQueries (idempotent, with a probe) is
observed instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from remedy.actions.registry import REGISTRY
from remedy.api.digest import spec_digest
from remedy.base.constants import REMEDIATIONS
from remedy.base.errors import AmbiguousOutcomeError
from remedy.lifecycle.machine import Lifecycle as Engine
from remedy_devenv.pgfaultproxy import PgFaultProxy
from remedy_devenv.services import PostgresServer
from tests.fixtures.actions import make_ctx
from tests.fixtures.fakes import FakeRecorder, FakeStore

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]

CONN = {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "connectTimeout": "3s", "statementTimeout": "10s"}


@pytest.fixture
def proxy(postgres_server: PostgresServer) -> Iterator[PgFaultProxy]:
    p = PgFaultProxy(postgres_server.host, postgres_server.port).start()
    yield p
    p.stop()


def admin(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def engine_for(dsn: str, store: FakeStore, recorder: FakeRecorder, escalations: list[str]) -> Engine:
    def context(obj: dict[str, Any]) -> Any:
        meta = obj["metadata"]
        return make_ctx({("pg", "dsn"): dsn}, namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    async def escalate(obj: dict[str, Any], message: str) -> None:
        escalations.append(message)

    return Engine(store=store, recorder=recorder, registry=REGISTRY, context_factory=context, escalate=escalate)


async def test_commit_answer_lost_ends_outcome_unknown_with_escalation(postgres_server: PostgresServer,
                                                                       proxy: PgFaultProxy) -> None:
    admin(postgres_server.dsn, "DROP TABLE IF EXISTS commit_lost")
    admin(postgres_server.dsn, "CREATE TABLE commit_lost (name text, active boolean)")
    admin(postgres_server.dsn, "INSERT INTO commit_lost VALUES ('bad', true), ('good', true)")
    store, recorder, escalations = FakeStore(), FakeRecorder(), []
    engine = engine_for(proxy.dsn(postgres_server.superuser, postgres_server.password), store, recorder, escalations)
    spec: dict[str, Any] = {
        "reason": "test", "approval": {"required": True, "approvedBy": "alice"},
        "action": {"postgresStatement": {"connection": CONN, "params": ["bad"], "maxRows": 1,
                                         "sql": "UPDATE commit_lost SET active = false WHERE name = %s"}}}
    spec["approval"]["approvedSpecDigest"] = spec_digest(spec)  # an approval names the spec it approved
    store.add(REMEDIATIONS, {"metadata": {"name": "r"}, "spec": spec})

    phase = await engine.reconcile("ns", "r")

    st = store.obj(REMEDIATIONS, "r")["status"]
    assert proxy.cuts == 1 and proxy.commits_seen == 1
    # The server committed: the change is there, which is why "Failed" would be a lie.
    assert admin(postgres_server.dsn, "SELECT active FROM commit_lost WHERE name = 'bad'") == [(False,)]
    assert phase == "Failed" and st["phase"] == "Failed"
    completed = next(c for c in st["conditions"] if c["type"] == "Completed")
    executed = next(c for c in st["conditions"] if c["type"] == "Executed")
    assert completed["reason"] == "OutcomeUnknown", st
    assert executed["status"] == "Unknown" and executed["reason"] == "OutcomeUnknown"
    assert "COMMIT" in st["message"] and "pg_xact_status" in st["message"]
    assert "EscalationRequired" in recorder.reasons("r") and len(escalations) == 1
    # Final: never run again (a second COMMIT would be a second change).
    assert await engine.reconcile("ns", "r") == "Failed"
    assert proxy.commits_seen == 1


async def test_statement_commit_lost_is_ambiguous_and_a_rolled_back_one_is_not(postgres_server: PostgresServer,
                                                                              proxy: PgFaultProxy) -> None:
    """The action itself: lost during COMMIT -> AmbiguousOutcomeError; COMMIT never forwarded
    (the server rolls back) is still ambiguous to the client: it cannot know which happened."""
    admin(postgres_server.dsn, "DROP TABLE IF EXISTS commit_lost2")
    admin(postgres_server.dsn, "CREATE TABLE commit_lost2 (n int)")
    admin(postgres_server.dsn, "INSERT INTO commit_lost2 VALUES (1)")
    action = REGISTRY["postgresStatement"]
    p = action.params.model_validate({"connection": CONN, "sql": "UPDATE commit_lost2 SET n = n + 1", "maxRows": 1})
    ctx = make_ctx({("pg", "dsn"): proxy.dsn(postgres_server.superuser, postgres_server.password)})
    proxy.mode = "reset"
    with pytest.raises(AmbiguousOutcomeError, match="during COMMIT"):
        await action.execute(ctx, p, {})
    assert admin(postgres_server.dsn, "SELECT n FROM commit_lost2") == [(1,)]  # rolled back this time
