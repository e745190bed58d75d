"""terminatePostgresQueries and postgresStatement against a real PostgreSQL 15.

Why real: the safety of both actions lives in the server's behaviour (pg_stat_activity
columns, backend types, what pg_cancel_backend does to an idle transaction, rowcount inside a
rolled-back transaction), which a fake would only restate. Sessions to be killed are real
client connections opened here with their own application_name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from remedy.actions.base import Applied, NotApplied
from remedy.actions.keyset import SAMPLE_SIZE, KeySetTally
from remedy.actions.postgres import POSTGRES_STATEMENT, TERMINATE_POSTGRES_QUERIES
from remedy.base.errors import ForbiddenError, InvalidSpecError, OverCapError, PermanentError, RetryableError, SkipError
from remedy.clients.connectors import Connectors
from remedy_devenv.services import PostgresServer
from tests.fixtures.actions import make_ctx, run_action

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

CONN = {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "connectTimeout": "3s", "statementTimeout": "10s"}


def ctx_for(dsn: str, **kwargs: Any) -> Any:
    return make_ctx({("pg", "dsn"): dsn}, **kwargs)


@dataclass
class Session:
    """A client session held open by the test; ``task`` runs its current statement."""

    conn: psycopg.AsyncConnection[Any]
    pid: int  # kept: a terminated connection reports pid 0
    task: asyncio.Task[Any] | None = None

    async def run(self, sql: str) -> None:
        self.task = asyncio.create_task(self.conn.execute(sql))

    async def settle(self, timeout: float = 10) -> None:
        """Give an interrupted statement time to report back to this client."""
        assert self.task is not None
        await asyncio.wait({self.task}, timeout=timeout)

    async def outcome(self) -> str:
        """How the running statement ended: 'running', 'cancelled', 'terminated' or 'done'."""
        assert self.task is not None
        if not self.task.done():
            return "running"
        exc = self.task.exception()
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return "cancelled"
        if exc is not None:
            return "terminated"
        return "done"


@dataclass
class Sessions:
    dsn: str
    opened: list[Session] = field(default_factory=list)

    async def open(self, app: str, **kwargs: Any) -> Session:
        conn = await psycopg.AsyncConnection.connect(self.dsn, application_name=app, autocommit=True, **kwargs)
        s = Session(conn, conn.info.backend_pid)
        self.opened.append(s)
        return s

    async def close(self) -> None:
        for s in self.opened:
            if s.task is not None and not s.task.done():
                with contextlib.suppress(psycopg.Error):
                    await s.conn.cancel_safe()
            if s.task is not None:
                with contextlib.suppress(psycopg.Error, asyncio.CancelledError):
                    await asyncio.wait_for(s.task, 10)
            with contextlib.suppress(psycopg.Error):
                await s.conn.close()


@pytest.fixture
async def sessions(postgres_server: PostgresServer) -> AsyncIterator[Sessions]:
    s = Sessions(postgres_server.dsn)
    yield s
    await s.close()


async def admin(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="test-admin") as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def wait_for(dsn: str, pid: int, pred: Callable[[tuple[Any, ...]], bool], timeout: float = 15) -> None:
    """Until the backend's (state, query age seconds, xact age seconds) satisfies ``pred``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        rows = await admin(
            dsn,
            "SELECT state, extract(epoch FROM now() - query_start)::float8, "
            "extract(epoch FROM now() - xact_start)::float8 FROM pg_stat_activity WHERE pid = %s",
            [pid],
        )
        if rows and pred(rows[0]):
            return
        assert loop.time() < end, f"backend {pid} never reached the expected state: {rows}"
        await asyncio.sleep(0.1)


def sleeping(min_age: float) -> Callable[[tuple[Any, ...]], bool]:
    return lambda r: r[0] == "active" and r[1] >= min_age


def terminate_params(**kw: Any) -> dict[str, Any]:
    return {"connection": CONN, "minDuration": "1s", "grace": "1s", **kw}


# --- terminatePostgresQueries ------------------------------------------------------------


async def test_slow_checkout_query_is_cancelled_and_other_apps_untouched(
    postgres_server: PostgresServer, sessions: Sessions
) -> None:
    checkout = await sessions.open("checkout")
    reporting = await sessions.open("reporting")
    await checkout.run("SELECT pg_sleep(60)")
    await reporting.run("SELECT pg_sleep(60)")
    await wait_for(postgres_server.dsn, checkout.pid, sleeping(1.2))
    await wait_for(postgres_server.dsn, reporting.pid, sleeping(1.2))

    plan, result = await run_action(
        TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn), terminate_params(applicationName="checkout")
    )

    assert [b["pid"] for b in plan["backends"]] == [checkout.pid]
    b = plan["backends"][0]
    assert b["applicationName"] == "checkout" and b["state"] == "active" and b["user"] == "remedy"
    assert b["database"] == "app" and b["durationSeconds"] >= 1 and b["query"] == "SELECT pg_sleep(60)"
    assert result is not None
    assert result["backends"] == [
        {"pid": checkout.pid, "user": "remedy", "applicationName": "checkout", "database": "app", "outcome": "cancelled"}
    ]
    await checkout.settle()
    assert await checkout.outcome() == "cancelled"
    assert await reporting.outcome() == "running"


async def test_terminate_without_cancel_and_query_pattern(postgres_server: PostgresServer, sessions: Sessions) -> None:
    victim = await sessions.open("checkout-term")
    other = await sessions.open("checkout-term")
    await victim.run("SELECT pg_sleep(60) /* batch-export */")
    await other.run("SELECT pg_sleep(60) /* keep */")
    await wait_for(postgres_server.dsn, victim.pid, sleeping(1.2))
    await wait_for(postgres_server.dsn, other.pid, sleeping(1.2))

    plan, result = await run_action(
        TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn),
        terminate_params(applicationName="checkout-term", queryPattern=r"batch-(export|import)", cancelFirst=False),
    )

    assert [b["pid"] for b in plan["backends"]] == [victim.pid]
    assert result is not None and result["backends"][0]["outcome"] == "terminated"
    await victim.settle()
    assert await victim.outcome() == "terminated"
    assert await other.outcome() == "running"


async def test_signals_go_in_batches_of_identities(postgres_server: PostgresServer, sessions: Sessions,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One statement per batch of planned identities (unnest), not one per backend: five
    backends in batches of two are each terminated once, and a sixth of the same app that
    started after the plan is left alone (not in any batch)."""
    from remedy.actions import postgres as pg_action

    monkeypatch.setattr(pg_action, "BATCH", 2)
    victims = [await sessions.open("batch-app") for _ in range(5)]
    for v in victims:
        await v.run("SELECT pg_sleep(60)")
    for v in victims:
        await wait_for(postgres_server.dsn, v.pid, sleeping(1.2))
    ctx, params = ctx_for(postgres_server.dsn), terminate_params(applicationName="batch-app", cancelFirst=False)
    spec = TERMINATE_POSTGRES_QUERIES.params.model_validate(params)
    plan = await TERMINATE_POSTGRES_QUERIES.plan(ctx, spec)
    late = await sessions.open("batch-app")
    await late.run("SELECT pg_sleep(60)")
    await wait_for(postgres_server.dsn, late.pid, sleeping(1.2))
    result = await TERMINATE_POSTGRES_QUERIES.execute(ctx, spec, plan)

    assert sorted(b["pid"] for b in plan["backends"]) == sorted(v.pid for v in victims)
    assert result["terminated"] == 5 and {b["outcome"] for b in result["backends"]} == {"terminated"}
    for v in victims:
        await v.settle()
        assert await v.outcome() == "terminated"
    assert await late.outcome() == "running"


async def test_invalid_query_pattern_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(InvalidSpecError, match="queryPattern"):
        await run_action(TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn), terminate_params(queryPattern="(unclosed"))


async def test_own_backend_walsender_and_autovacuum_never_planned(
    postgres_server: PostgresServer, sessions: Sessions
) -> None:
    # A walsender in database mode may run SQL: it sleeps like a client, but must never be touched.
    walsender = await sessions.open("repl-lookalike", replication="database")
    await walsender.run("SELECT pg_sleep(60)")
    client = await sessions.open("plain-client")
    await client.run("SELECT pg_sleep(60)")
    await wait_for(postgres_server.dsn, walsender.pid, sleeping(1.2))
    await wait_for(postgres_server.dsn, client.pid, sleeping(1.2))

    # Connect as someone other than "remedy-operator", so only pg_backend_pid() can exclude us.
    own_pids: list[int] = []
    base = Connectors()

    async def spy(dsn: str, password: str | None, connect_timeout: float, statement_timeout: float) -> Any:
        conn = await base.postgres(dsn, password, connect_timeout, statement_timeout)
        await conn.execute("SET application_name = 'spy'")
        own_pids.append(conn.info.backend_pid)
        return conn

    ctx = ctx_for(postgres_server.dsn, connectors=Connectors(postgres=spy))
    plan, _ = await run_action(
        TERMINATE_POSTGRES_QUERIES, ctx,
        terminate_params(minDuration="0s", states=["active", "idle in transaction", "idle in transaction (aborted)"],
                         maxQueries=1000),
        dry_run=True,
    )
    planned = {b["pid"] for b in plan["backends"]}
    assert client.pid in planned
    assert walsender.pid not in planned
    assert not planned & set(own_pids)
    others = await admin(postgres_server.dsn, "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'")
    assert others and not planned & {r[0] for r in others}
    assert all(b["applicationName"] != "remedy-operator" for b in plan["backends"])
    kinds = {r[0] for r in await admin(postgres_server.dsn, "SELECT backend_type FROM pg_stat_activity")}
    assert {"autovacuum launcher", "walsender"} <= kinds


async def test_over_cap_is_refused_and_nothing_signalled(postgres_server: PostgresServer, sessions: Sessions) -> None:
    a, b = await sessions.open("capped"), await sessions.open("capped")
    await a.run("SELECT pg_sleep(60)")
    await b.run("SELECT pg_sleep(60)")
    await wait_for(postgres_server.dsn, a.pid, sleeping(1.2))
    await wait_for(postgres_server.dsn, b.pid, sleeping(1.2))

    with pytest.raises(OverCapError, match="2 backends match, more than maxQueries 1"):
        await run_action(
            TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn), terminate_params(applicationName="capped", maxQueries=1)
        )
    await asyncio.sleep(0.3)
    assert await a.outcome() == "running" and await b.outcome() == "running"


async def test_idle_in_transaction_measured_from_xact_start(postgres_server: PostgresServer, sessions: Sessions) -> None:
    idler = await sessions.open("idler")
    await idler.conn.execute("BEGIN")
    await idler.conn.execute("SELECT 1")
    await asyncio.sleep(1.5)
    await idler.conn.execute("SELECT 2")  # the last query is fresh; only the transaction is old
    await wait_for(postgres_server.dsn, idler.pid, lambda r: r[0] == "idle in transaction" and r[2] >= 1.5)

    params = terminate_params(applicationName="idler", states=["idle in transaction"])
    plan, result = await run_action(TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn), params)

    assert [b["pid"] for b in plan["backends"]] == [idler.pid]
    assert plan["backends"][0]["state"] == "idle in transaction"
    assert plan["backends"][0]["durationSeconds"] >= 1.5
    # pg_cancel_backend does nothing to an idle transaction, so grace ends in terminate
    assert result is not None and result["backends"][0]["outcome"] == "terminated"
    gone = await admin(postgres_server.dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", [idler.pid])
    assert gone == []
    # re-running the recorded plan is harmless: the backend is gone, nothing is signalled
    p = TERMINATE_POSTGRES_QUERIES.params.model_validate(params)
    again = await TERMINATE_POSTGRES_QUERIES.execute(ctx_for(postgres_server.dsn), p, plan)
    assert again["backends"][0]["outcome"] == "gone"


async def test_backend_that_moved_on_is_not_signalled(postgres_server: PostgresServer, sessions: Sessions) -> None:
    s = await sessions.open("mover")
    await s.run("SELECT pg_sleep(1.5)")
    await wait_for(postgres_server.dsn, s.pid, sleeping(1.1))
    params = terminate_params(applicationName="mover")
    plan, _ = await run_action(TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn), params, dry_run=True)
    assert [b["pid"] for b in plan["backends"]] == [s.pid]
    assert s.task is not None
    await s.task
    await s.run("SELECT pg_sleep(60)")  # same pid and backend_start, a new query_start
    await wait_for(postgres_server.dsn, s.pid, sleeping(0))

    p = TERMINATE_POSTGRES_QUERIES.params.model_validate(params)
    result = await TERMINATE_POSTGRES_QUERIES.execute(ctx_for(postgres_server.dsn), p, plan)

    assert result["backends"][0]["outcome"] == "gone"
    await asyncio.sleep(0.3)
    assert await s.outcome() == "running"


async def test_nothing_to_do_is_a_skip(postgres_server: PostgresServer) -> None:
    with pytest.raises(SkipError):
        await run_action(
            TERMINATE_POSTGRES_QUERIES, ctx_for(postgres_server.dsn), terminate_params(applicationName="nobody-here")
        )


async def _sleepers(postgres_server: PostgresServer, sessions: Sessions, app: str, n: int) -> list[Session]:
    opened = [await sessions.open(app) for _ in range(n)]
    for s in opened:
        await s.run("SELECT pg_sleep(60)")
    for s in opened:
        await wait_for(postgres_server.dsn, s.pid, sleeping(1.2))
    return opened


async def test_many_backends_leave_a_bounded_plan_and_all_are_terminated_once(
    postgres_server: PostgresServer, sessions: Sessions
) -> None:
    """30 backends, more than the sample: status holds the count, 20 of them and a digest of all
    30 identities; execute re-derives the same 30 (sameSet) and terminates each; the sessions'
    own connections are the witness."""
    victims = await _sleepers(postgres_server, sessions, "bulk-app", SAMPLE_SIZE + 10)
    params = terminate_params(applicationName="bulk-app", cancelFirst=False, maxQueries=100)
    ctx = ctx_for(postgres_server.dsn)
    plan, _ = await run_action(TERMINATE_POSTGRES_QUERIES, ctx, params, dry_run=True)
    rows = await admin(postgres_server.dsn, "SELECT pid, backend_start, query_start FROM pg_stat_activity "
                                            "WHERE pid = ANY(%s)", [[v.pid for v in victims]])
    expected = KeySetTally()
    for pid, backend_start, query_start in rows:  # the identities as the server reports them
        expected.add(f"{pid}|{backend_start.isoformat()}|{query_start.isoformat()}")
    assert plan["count"] == SAMPLE_SIZE + 10 and len(plan["backends"]) == SAMPLE_SIZE
    assert plan["backendsDigest"] == expected.digest and plan["backendsSampleComplete"] is False
    assert plan["filters"]["applicationName"] == "bulk-app" and plan["startedBefore"] < plan["planTime"]
    result = await TERMINATE_POSTGRES_QUERIES.execute(ctx, TERMINATE_POSTGRES_QUERIES.params.model_validate(params), plan)
    assert result["terminated"] == SAMPLE_SIZE + 10 and result["gone"] == 0
    assert result["found"] == {"sameSet": True, "planned": 30, "acted": 30, "difference": 0}
    assert result["signalledCount"] == 30 and result["signalledDigest"] == expected.digest
    assert len(result["backends"]) == SAMPLE_SIZE and {b["outcome"] for b in result["backends"]} == {"terminated"}
    for v in victims:
        await v.settle()
        assert await v.outcome() == "terminated"


async def test_execute_uses_the_plans_filters_not_a_later_spec_edit(
    postgres_server: PostgresServer, sessions: Sessions
) -> None:
    """The plan chose app 'edit-a'; the spec is then widened to every app: execute still
    signals only what the recorded filters and bound select."""
    (a,) = await _sleepers(postgres_server, sessions, "edit-a", 1)
    (b,) = await _sleepers(postgres_server, sessions, "edit-b", 1)
    ctx = ctx_for(postgres_server.dsn)
    plan, _ = await run_action(TERMINATE_POSTGRES_QUERIES, ctx, terminate_params(applicationName="edit-a",
                                                                                 cancelFirst=False), dry_run=True)
    widened = TERMINATE_POSTGRES_QUERIES.params.model_validate(terminate_params(cancelFirst=False, maxQueries=1000))
    result = await TERMINATE_POSTGRES_QUERIES.execute(ctx, widened, plan)

    assert result["terminated"] == 1 and [x["pid"] for x in result["backends"]] == [a.pid]
    await a.settle()
    assert await a.outcome() == "terminated"
    assert await b.outcome() == "running"


async def test_observe_before_and_after_execute(postgres_server: PostgresServer, sessions: Sessions) -> None:
    (s,) = await _sleepers(postgres_server, sessions, "observed", 1)
    ctx = ctx_for(postgres_server.dsn)
    params = terminate_params(applicationName="observed", cancelFirst=False)
    p = TERMINATE_POSTGRES_QUERIES.params.model_validate(params)
    plan, _ = await run_action(TERMINATE_POSTGRES_QUERIES, ctx, params, dry_run=True)
    assert TERMINATE_POSTGRES_QUERIES.observe is not None

    before = await TERMINATE_POSTGRES_QUERIES.observe(ctx, p, plan)
    assert isinstance(before, NotApplied) and str(s.pid) in before.detail
    await TERMINATE_POSTGRES_QUERIES.execute(ctx, p, plan)
    assert isinstance(await TERMINATE_POSTGRES_QUERIES.observe(ctx, p, plan), Applied)


async def test_a_plan_that_lists_every_backend_still_resumes(postgres_server: PostgresServer, sessions: Sessions) -> None:
    """An attempt Running across an upgrade carries the old plan (every backend listed, no
    bound): execute and observe use that list with the same identity guards."""
    (s,) = await _sleepers(postgres_server, sessions, "old-plan", 1)
    (later,) = await _sleepers(postgres_server, sessions, "old-plan", 1)
    ctx = ctx_for(postgres_server.dsn)
    params = terminate_params(applicationName="old-plan", cancelFirst=False)
    p = TERMINATE_POSTGRES_QUERIES.params.model_validate(params)
    plan, _ = await run_action(TERMINATE_POSTGRES_QUERIES, ctx, params, dry_run=True)
    old = {"backends": [b for b in plan["backends"] if b["pid"] == s.pid], "count": 1, "change": "as before"}

    result = await TERMINATE_POSTGRES_QUERIES.execute(ctx, p, old)
    assert result["terminated"] == 1 and result["found"]["sameSet"] is None
    assert isinstance(await TERMINATE_POSTGRES_QUERIES.observe(ctx, p, old), Applied)
    await s.settle()
    assert await s.outcome() == "terminated"
    assert await later.outcome() == "running"


# --- postgresStatement -------------------------------------------------------------------

RUNBOOK_002 = 'UPDATE "providers" SET "is_active" = false WHERE "name" = %s'


@pytest.fixture
async def providers(postgres_server: PostgresServer) -> AsyncIterator[str]:
    dsn = postgres_server.dsn
    await admin(dsn, 'DROP TABLE IF EXISTS "providers"')
    await admin(dsn, 'CREATE TABLE "providers" ("name" text NOT NULL, "is_active" boolean NOT NULL DEFAULT true)')
    await admin(
        dsn,
        """INSERT INTO "providers" ("name") VALUES ('bad_provider'), ('good_provider'),
           ('dup'), ('dup'), ('dup'), ('dup'), ('dup')""",
    )
    yield dsn
    await admin(dsn, 'DROP TABLE IF EXISTS "providers"')


async def active(dsn: str, name: str) -> list[bool]:
    return [r[0] for r in await admin(dsn, 'SELECT "is_active" FROM "providers" WHERE "name" = %s', [name])]


async def test_runbook_002_disables_one_provider(providers: str) -> None:
    params = {"connection": CONN, "sql": RUNBOOK_002, "params": ["bad_provider"], "maxRows": 1}

    plan, _ = await run_action(POSTGRES_STATEMENT, ctx_for(providers), params, dry_run=True)
    assert plan["nodeType"] == "ModifyTable" and plan["operation"] == "Update" and plan["relation"] == "providers"
    assert plan["estimatedRows"] >= 0 and "EXPLAIN" in plan["note"]
    assert await active(providers, "bad_provider") == [True]  # planning changed nothing

    plan, result = await run_action(POSTGRES_STATEMENT, ctx_for(providers), params)
    assert result is not None
    assert result["rowsAffected"] == 1 and result["committed"] is True and result["status"] == "UPDATE 1"
    assert await active(providers, "bad_provider") == [False]
    assert await active(providers, "good_provider") == [True]


async def test_over_max_rows_is_rolled_back_at_execute(providers: str) -> None:
    """The plan only estimates (EXPLAIN); the real count is capped inside the transaction."""
    params = {"connection": CONN, "sql": RUNBOOK_002, "params": ["dup"], "maxRows": 1}
    with pytest.raises(OverCapError, match="5 rows, more than maxRows 1; rolled back"):
        await run_action(POSTGRES_STATEMENT, ctx_for(providers), params)
    assert await active(providers, "dup") == [True] * 5


async def test_plan_never_executes_the_statement(postgres_server: PostgresServer, sessions: Sessions) -> None:
    """Functions with effects outside the transaction are not called at plan time: the
    victim session survives, the sequence does not advance, no advisory lock is taken."""
    dsn = postgres_server.dsn
    victim = await sessions.open("plan-victim")
    await admin(dsn, "DROP SEQUENCE IF EXISTS plan_seq")
    await admin(dsn, "CREATE SEQUENCE plan_seq")
    for sql, params in [
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", ["plan-victim"]),
        ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s", ["plan-victim"]),
        ("SELECT nextval('plan_seq')", []),
        ("SELECT pg_advisory_lock(4242)", []),
    ]:
        plan, _ = await run_action(POSTGRES_STATEMENT, ctx_for(dsn), {"connection": CONN, "sql": sql, "params": params},
                                   dry_run=True)
        assert plan["estimatedRows"] >= 1
    assert (await (await victim.conn.execute("SELECT 1")).fetchone()) == (1,)
    assert await admin(dsn, "SELECT last_value, is_called FROM plan_seq") == [(1, False)]
    assert await admin(dsn, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242") == []


async def test_sql_cannot_turn_the_plan_into_explain_analyze(providers: str) -> None:
    for sql in ['ANALYZE UPDATE "providers" SET "is_active" = false', 'EXPLAIN ANALYZE UPDATE "providers" SET "is_active" = false',
                'VACUUM "providers"']:
        with pytest.raises(InvalidSpecError, match="plans with EXPLAIN"):
            await run_action(POSTGRES_STATEMENT, ctx_for(providers), {"connection": CONN, "sql": sql, "maxRows": 100},
                             dry_run=True)
    assert await active(providers, "dup") == [True] * 5


async def test_statement_errors_carry_sqlstate_and_one_statement_only(providers: str) -> None:
    bad = {"connection": CONN, "sql": 'UPDATE "nope" SET x = 1 WHERE y = %s', "params": ["a"]}
    with pytest.raises(PermanentError, match="SQLSTATE 42P01"):
        await run_action(POSTGRES_STATEMENT, ctx_for(providers), bad)
    smuggled = {"connection": CONN, "sql": RUNBOOK_002.replace("%s", "'dup'") + '; DROP TABLE "providers"'}
    with pytest.raises(PermanentError, match="SQLSTATE 42601"):
        await run_action(POSTGRES_STATEMENT, ctx_for(providers), smuggled)
    assert await active(providers, "dup") == [True] * 5


async def test_bad_password_is_forbidden_without_the_password(postgres_server: PostgresServer) -> None:
    wrong = "Wr0ng-S3cret-pw"
    dsn = postgres_server.dsn_for(postgres_server.superuser, wrong)
    with pytest.raises(ForbiddenError) as info:
        await run_action(POSTGRES_STATEMENT, ctx_for(dsn), {"connection": CONN, "sql": "SELECT 1"})
    assert str(info.value) == "authentication failed for Secret pg/dsn"
    assert wrong not in str(info.value) and postgres_server.password not in str(info.value)

    # with a separate password Secret, that Secret is named
    no_pw = f"host={postgres_server.host} port={postgres_server.port} dbname=app user=remedy"
    ctx = make_ctx({("pg", "dsn"): no_pw, ("pg-pw", "password"): wrong})
    conn = {**CONN, "passwordSecretRef": {"name": "pg-pw", "key": "password"}}
    with pytest.raises(ForbiddenError, match=r"^authentication failed for Secret pg-pw/password$"):
        await run_action(TERMINATE_POSTGRES_QUERIES, ctx, terminate_params(connection=conn))


async def test_unreachable_is_retryable(postgres_server: PostgresServer) -> None:
    from remedy_devenv.services import free_port

    dsn = f"postgresql://remedy:secret-pw@127.0.0.1:{free_port()}/app"
    with pytest.raises(RetryableError) as info:
        await run_action(POSTGRES_STATEMENT, ctx_for(dsn), {"connection": CONN, "sql": "SELECT 1"})
    assert "secret-pw" not in str(info.value)
