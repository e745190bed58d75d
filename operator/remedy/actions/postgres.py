"""PostgreSQL actions (runbooks 002, 003): terminate runaway backends, run one guarded statement.

Why a module of its own: both actions share the risky part, talking to a production database
with credentials from a Secret, and the rules for it live here once:

- connections come from ``ctx.connectors.postgres`` (timeouts and ``application_name``
  ``OPERATOR_APP_NAME`` are set there), never from psycopg directly;
- SQL is parameterized; a user's statement is sent with the extended protocol so a single
  spec cannot smuggle in a second statement;
- errors map to remedy's tree: a bad password is ForbiddenError naming only the Secret, an
  unreachable server is RetryableError only while nothing has been sent, and a failed
  statement is PermanentError carrying its SQLSTATE;
- a plan never changes anything (dry runs and shadow policies only plan): postgresStatement
  plans with ``EXPLAIN`` (no ``ANALYZE``) in a READ ONLY transaction, so the statement is never
  executed before the approved attempt. Executing it in a transaction that is rolled back would
  not do: functions with effects outside the transaction (pg_terminate_backend, nextval,
  dblink, advisory locks) take effect anyway;
- a connection lost once a change may have reached the server (a signal sent, COMMIT sent) is
  an AmbiguousOutcomeError: the engine observes (terminatePostgresQueries) or ends
  OutcomeUnknown with an escalation (postgresStatement), never Failed as if nothing happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..clients.lazy import lazy_module

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy_module("psycopg")  # imported when a Postgres action first runs (clients/lazy.py)

from ..api.common import SecretKeyRef, parse_duration
from ..api.postgres import PostgresConnection, PostgresStatement, TerminatePostgresQueries
from ..base.constants import OPERATOR_APP_NAME
from ..base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RetryableError,
    SkipError,
    TargetNotFoundError,
)
from .base import ActionContext, ActionDef, Applied, Evidence, NotApplied, Observation
from .planned_set import bounded, planned_params
from .postgres_evidence import backend_evidence, identity, terminate_plan_evidence, terminate_result_evidence

OPERATOR_APP = OPERATOR_APP_NAME
QUERY_PREVIEW = 120
AUTH_SQLSTATES = frozenset({"28000", "28P01"})  # invalid_authorization_specification, invalid_password
TERMINATE_CONFIRM_SECONDS = 5.0
POLL_SECONDS = 0.2


# --- connection and error mapping --------------------------------------------------------


def _auth_ref(c: PostgresConnection) -> SecretKeyRef:
    # The password lives in the dedicated Secret when one is given, else inside the DSN.
    return c.password_secret_ref or c.dsn_secret_ref


def _sqlstate_error(exc: psycopg.Error, doing: str) -> PermanentError:
    """A failed statement as a user-safe PermanentError; server messages carry no secrets."""
    state = exc.sqlstate or "unknown"
    primary = exc.diag.message_primary or type(exc).__name__
    if state == "42501":
        return ForbiddenError(f"{doing}: permission denied (SQLSTATE {state}): {primary}")
    return PermanentError(f"{doing} failed (SQLSTATE {state}): {primary}", reason="StatementFailed")


# Errors that say the connection (not the statement) failed: no SQLSTATE at all (the socket
# broke), class 08 (connection exception) or 57P01-57P03 (the server shut down or is starting).
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith(_CONNECTION_SQLSTATES)


@asynccontextmanager
async def _connect(ctx: ActionContext, c: PostgresConnection) -> AsyncIterator[Any]:
    dsn = await ctx.secret(c.dsn_secret_ref)
    password = await ctx.optional_secret(c.password_secret_ref)
    where = f"Secret {c.dsn_secret_ref.name}/{c.dsn_secret_ref.key}"
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's parse error quotes the DSN, password included: never pass it on.
        raise InvalidSpecError(f"{where} does not hold a valid libpq DSN or URL") from None
    try:
        conn = await ctx.connectors.postgres(
            dsn, password, parse_duration(c.connect_timeout), parse_duration(c.statement_timeout)
        )
    except psycopg.OperationalError as exc:
        if exc.sqlstate in AUTH_SQLSTATES or "authentication failed" in str(exc):
            ref = _auth_ref(c)
            raise ForbiddenError(f"authentication failed for Secret {ref.name}/{ref.key}") from None
        if exc.sqlstate == "3D000":
            raise TargetNotFoundError(f"database named in {where} does not exist") from None
        # Connection-level messages name host and port only; still, keep them out of the
        # message in case a future libpq echoes connection options.
        raise RetryableError(f"PostgreSQL from {where} unreachable (SQLSTATE {exc.sqlstate or 'none'})") from None
    try:
        yield conn
    finally:
        await conn.close()


# --- terminatePostgresQueries ------------------------------------------------------------

# Never touched, whatever the filters say: our own backend, anything that is not a client
# backend (walsender, autovacuum, background workers, ...) and other remedy connections.
# The bound is the plan's: at plan time now() minus minDuration; at execute the recorded
# ``startedBefore``, so execute re-derives exactly "matches the filters now and was already
# past the threshold at plan time" (planned_set.py) instead of replaying a stored list.
_CANDIDATES_SQL = """
SELECT pid, usename, application_name, datname, state,
       backend_start, query_start, xact_start,
       extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start ELSE xact_start END)::float8
           AS duration,
       left(query, %(preview)s) AS query,
       count(*) OVER () AS total,
       now() AS plan_time,
       COALESCE(%(started_before)s::timestamptz, now() - make_interval(secs => %(min_secs)s)) AS started_before
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND application_name IS DISTINCT FROM %(own_app)s
  AND state = ANY(%(states)s)
  AND CASE WHEN state = 'active' THEN query_start ELSE xact_start END
      <= COALESCE(%(started_before)s::timestamptz, now() - make_interval(secs => %(min_secs)s))
  AND (%(database)s::text IS NULL OR datname = %(database)s)
  AND (%(user)s::text IS NULL OR usename = %(user)s)
  AND (%(app)s::text IS NULL OR application_name = %(app)s)
  AND (%(pattern)s::text IS NULL OR query ~ %(pattern)s)
ORDER BY duration DESC, pid
LIMIT %(limit)s
"""

# The same backend still doing the same thing: a recycled pid has another backend_start, a
# backend that moved on has another query_start or state. Used to guard every signal. One
# statement per batch of planned identities (unnest of parallel arrays), not one per backend.
_SAME_BACKENDS = """
FROM pg_stat_activity a
JOIN unnest(%(pids)s::int[], %(backend_starts)s::text[], %(query_starts)s::text[], %(states)s::text[])
     AS p(pid, backend_start, query_start, state)
  ON a.pid = p.pid AND a.backend_start = p.backend_start::timestamptz
 AND a.query_start IS NOT DISTINCT FROM p.query_start::timestamptz AND a.state = p.state
WHERE a.backend_type = 'client backend' AND a.application_name IS DISTINCT FROM %(own_app)s
"""
_SIGNAL_SQL = {
    "cancel": f"SELECT a.pid, pg_cancel_backend(a.pid) {_SAME_BACKENDS}",
    "terminate": f"SELECT a.pid, pg_terminate_backend(a.pid) {_SAME_BACKENDS}",
}
_STILL_THERE_SQL = f"SELECT a.pid {_SAME_BACKENDS}"
BATCH = 500  # identities per statement


def _terminate_target(p: TerminatePostgresQueries) -> str:
    scope = p.database or "all databases"
    return f"postgres {scope} {'/'.join(p.states)} >= {p.min_duration}"


async def _validate_pattern(conn: Any, pattern: str) -> None:
    # The server's own regex engine (POSIX ARE) is the one that will apply it, so ask it.
    try:
        await conn.execute("SELECT '' ~ %s", [pattern])
    except psycopg.errors.InvalidRegularExpression as exc:
        raise InvalidSpecError(f"queryPattern is not a valid PostgreSQL regex: {exc.diag.message_primary}") from None


async def _candidates(conn: Any, p: TerminatePostgresQueries, started_before: str | None) -> list[Any]:
    """Rows matching ``p``'s filters whose query/transaction started by the bound (plan: now - minDuration)."""
    cur = await conn.execute(
        _CANDIDATES_SQL,
        {
            "preview": QUERY_PREVIEW, "own_app": OPERATOR_APP, "states": list(p.states),
            "min_secs": parse_duration(p.min_duration), "started_before": started_before, "database": p.database,
            "user": p.user, "app": p.application_name, "pattern": p.query_pattern, "limit": p.max_queries + 1,
        },
    )
    rows: list[Any] = await cur.fetchall()
    return rows


async def terminate_plan(ctx: ActionContext, p: TerminatePostgresQueries) -> Evidence:
    async with _connect(ctx, p.connection) as conn:
        try:
            if p.query_pattern is not None:
                await _validate_pattern(conn, p.query_pattern)
            rows = await _candidates(conn, p, None)
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:  # connection lost: plan changed nothing, try again
                raise RetryableError("PostgreSQL connection lost while planning") from None
            raise _sqlstate_error(exc, "reading pg_stat_activity") from None
        except psycopg.Error as exc:
            raise _sqlstate_error(exc, "reading pg_stat_activity") from None
    total = int(rows[0][10]) if rows else 0
    if total > p.max_queries:
        raise OverCapError(f"{total} backends match, more than maxQueries {p.max_queries}; refused, nothing signalled")
    if not rows:
        raise SkipError("no backend matches the filters", reason="NothingToDo", evidence={"backends": []})
    return terminate_plan_evidence(rows, p)


async def _planned_backends(conn: Any, p: TerminatePostgresQueries, plan: Evidence) -> tuple[list[Evidence], int]:
    """The planned set, re-derived with the plan's filters and bound (an older plan: its recorded
    list); returns the backends (at most maxQueries + 1) and how many matched in all."""
    if not bounded(plan):
        listed: list[Evidence] = plan["backends"]
        return listed, len(listed)
    rows = await _candidates(conn, planned_params(p, plan), plan["startedBefore"])
    return [backend_evidence(r) for r in rows], int(rows[0][10]) if rows else 0


def _identities(batch: list[Evidence]) -> dict[str, Any]:
    return {
        "pids": [b["pid"] for b in batch], "backend_starts": [b["backendStart"] for b in batch],
        "query_starts": [b["queryStart"] for b in batch], "states": [b["state"] for b in batch],
        "own_app": OPERATOR_APP,
    }


def _batches(backends: list[Evidence]) -> list[list[Evidence]]:
    return [backends[i:i + BATCH] for i in range(0, len(backends), BATCH)]


async def _signal(conn: Any, kind: str, backends: list[Evidence]) -> list[Evidence]:
    """Signal every backend still at its planned identity; returns those the server signalled."""
    done: set[int] = set()
    for batch in _batches(backends):
        cur = await conn.execute(_SIGNAL_SQL[kind], _identities(batch))
        done |= {int(pid) for pid, ok in await cur.fetchall() if ok}
    return [b for b in backends if b["pid"] in done]


async def _still_there(conn: Any, backends: list[Evidence]) -> list[Evidence]:
    left: set[int] = set()
    for batch in _batches(backends):
        cur = await conn.execute(_STILL_THERE_SQL, _identities(batch))
        left |= {int(row[0]) for row in await cur.fetchall()}
    return [b for b in backends if b["pid"] in left]


async def _wait_until_gone(conn: Any, backends: list[Evidence], seconds: float) -> list[Evidence]:
    """Poll until every backend left its planned identity or ``seconds`` pass; returns the rest."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    remaining = list(backends)
    while True:
        remaining = await _still_there(conn, remaining) if remaining else []
        if not remaining or loop.time() >= end:
            return remaining
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, end - loop.time())))


async def terminate_execute(ctx: ActionContext, p: TerminatePostgresQueries, plan: Evidence) -> Evidence:
    async with _connect(ctx, p.connection) as conn:
        try:
            backends, total = await _planned_backends(conn, p, plan)
            cap = int(dict(plan.get("filters") or {}).get("maxQueries", p.max_queries))
            if total > cap:
                raise OverCapError(f"{total} backends past the plan's bound match now, more than maxQueries "
                                   f"{cap}; refused, nothing signalled")
            outcome: dict[str, str] = {identity(b): "gone" for b in backends}
            pending = backends
            if p.cancel_first:
                signalled = await _signal(conn, "cancel", backends)
                for b in signalled:
                    outcome[identity(b)] = "cancelled"
                # Backends not signalled were already gone (or moved on): leave them alone.
                pending = await _wait_until_gone(conn, signalled, parse_duration(p.grace))
            if pending:
                await ctx.still_mine()  # the grace may have been long: still this executor's attempt?
            terminated = await _signal(conn, "terminate", pending) if pending else []
            for b in terminated:
                outcome[identity(b)] = "terminated"
            stuck = await _wait_until_gone(conn, terminated, TERMINATE_CONFIRM_SECONDS)
            for b in stuck:
                outcome[identity(b)] = "terminateSignalled"
        except psycopg.OperationalError as exc:
            if _connection_lost(exc):
                # Connection lost mid-way: signals may have been sent. Observe, never re-plan.
                raise AmbiguousOutcomeError("PostgreSQL connection lost while signalling backends") from None
            raise _sqlstate_error(exc, "signalling backends") from None
        except psycopg.Error as exc:
            # Signals may already have been sent, so this is never "nothing changed".
            raise _sqlstate_error(exc, "signalling backends") from None
    return terminate_result_evidence(plan, backends, outcome)


async def terminate_observe(ctx: ActionContext, p: TerminatePostgresQueries, plan: Evidence) -> Observation:
    """Applied when no backend matching the plan's filters and bound is still at its identity
    (an older plan: no recorded pid+backend_start); otherwise the recorded plan is safe to apply
    again: each signal is conditional on that same identity."""
    try:
        async with _connect(ctx, p.connection) as conn:
            backends, total = await _planned_backends(conn, p, plan)
            left = await _still_there(conn, backends)
    except psycopg.Error as exc:
        raise RetryableError(f"PostgreSQL unreachable while observing: {type(exc).__name__}",
                             reason="ObserveUnavailable") from None
    if not left:
        return Applied(f"none of the {plan.get('count', len(backends))} planned backend(s) is still there "
                       "(pid+backend_start+query_start gone)")
    return NotApplied(f"{max(len(left), total)} planned backend(s) still there: pid "
                      f"{', '.join(str(b['pid']) for b in left[:10])}")


TERMINATE_POSTGRES_QUERIES = ActionDef(
    name="terminatePostgresQueries", params=TerminatePostgresQueries, target=_terminate_target,
    plan=terminate_plan, execute=terminate_execute, observe=terminate_observe, idempotent=True,
)


# --- postgresStatement -------------------------------------------------------------------


def _statement_target(p: PostgresStatement) -> str:
    first = " ".join(p.sql.split())
    return first[:60] + ("..." if len(first) > 60 else "")


async def _explain(conn: Any, p: PostgresStatement) -> dict[str, Any]:
    """The planner's view of the statement, which is never executed.

    ``EXPLAIN`` without ``ANALYZE`` parses, plans and initialises the executor (permission checks
    included) but runs nothing: no volatile function (pg_terminate_backend, pg_cancel_backend,
    nextval, dblink, advisory locks, ...) is called, no row is written, no trigger fires. The
    planner may pre-evaluate functions declared IMMUTABLE or STABLE, which by PostgreSQL's
    contract have no side effects. As a second fence it runs in a READ ONLY transaction that is
    rolled back. The options are ours and come first, so ``sql`` cannot add ``ANALYZE``
    (``EXPLAIN (FORMAT JSON) ANALYZE ...`` is a syntax error), and the extended protocol still
    refuses a second statement.
    """
    try:
        async with conn.transaction(force_rollback=True):
            await conn.execute("SET TRANSACTION READ ONLY")
            cur = conn.cursor()
            await cur.execute("EXPLAIN (FORMAT JSON) " + p.sql, list(p.params), prepare=True)
            row = await cur.fetchone()
    except psycopg.errors.SyntaxError as exc:
        raise InvalidSpecError(
            "postgresStatement plans with EXPLAIN, so sql must be one SELECT, INSERT, UPDATE, DELETE, MERGE "
            f"or VALUES statement (SQLSTATE {exc.sqlstate}: {exc.diag.message_primary})") from None
    except psycopg.OperationalError as exc:
        if _connection_lost(exc):
            raise RetryableError("PostgreSQL connection lost while planning (EXPLAIN)") from None
        raise _sqlstate_error(exc, "EXPLAIN of the statement") from None
    except psycopg.Error as exc:
        raise _sqlstate_error(exc, "EXPLAIN of the statement") from None
    top: dict[str, Any] = row[0][0]["Plan"] if row else {}
    # A ModifyTable node estimates 0 output rows without RETURNING: the rows it changes are
    # those its input produces.
    counted = top["Plans"][0] if top.get("Node Type") == "ModifyTable" and top.get("Plans") else top
    return {"nodeType": top.get("Node Type"), "operation": top.get("Operation"),
            "relation": top.get("Relation Name"), "estimatedRows": int(counted.get("Plan Rows") or 0)}


async def _run_in_transaction(conn: Any, p: PostgresStatement, max_rows: int) -> tuple[int, str]:
    """Run the statement in a transaction; commit only if ``max_rows`` rows or fewer changed.

    Returns (rowcount, status). ``prepare=True`` forces the extended protocol, which rejects
    a second statement hidden in ``sql``. Once COMMIT is sent, a lost connection leaves the
    outcome unknown (the server may have committed before the answer was lost): that is an
    AmbiguousOutcomeError, never a failure. The transaction id is named so a person can ask the
    server (``SELECT pg_xact_status('<xid>')``).
    """
    rowcount, status, xid, committing = -1, "", None, False
    try:
        async with conn.transaction():
            cur = conn.cursor()
            await cur.execute(p.sql, list(p.params), prepare=True)
            rowcount, status = cur.rowcount, cur.statusmessage or ""
            if rowcount < 0:
                raise InvalidSpecError(f"statement reports no row count ({status or 'no status'}); "
                                       "only statements with a row count can be capped")
            if rowcount > max_rows:
                # Raising leaves the block, which rolls back.
                raise OverCapError(f"statement affected {rowcount} rows, more than maxRows {max_rows}; rolled back")
            xid = (await (await conn.execute("SELECT pg_current_xact_id()::text")).fetchone())[0]
            committing = True  # leaving the block sends COMMIT
    except psycopg.Error as exc:
        if committing and _connection_lost(exc):
            raise AmbiguousOutcomeError(
                f"PostgreSQL connection lost during COMMIT of transaction {xid} ({rowcount} row(s) changed "
                f"inside it): it may or may not have committed; ask the server with "
                f"SELECT pg_xact_status('{xid}')") from None
        if _connection_lost(exc):
            # Before COMMIT the server rolls the open transaction back when its connection ends: a
            # known outcome. Not retried: the statement may have called a function whose effect
            # lies outside the transaction.
            raise PermanentError("PostgreSQL connection lost before COMMIT: the transaction was rolled back; "
                                 "not run again", reason="ConnectionLost") from None
        raise _sqlstate_error(exc, "statement") from None
    return rowcount, status


async def statement_plan(ctx: ActionContext, p: PostgresStatement) -> Evidence:
    async with _connect(ctx, p.connection) as conn:
        explained = await _explain(conn, p)
    return {
        "sql": p.sql,
        "paramCount": len(p.params),
        **explained,
        "maxRows": p.max_rows,
        "change": f"run the statement in a transaction; commit if it affects at most {p.max_rows} row(s), "
        "else roll back",
        "note": "planned with EXPLAIN (not executed: nothing ran, no function with effects outside the "
        "transaction was called); estimatedRows is the planner's estimate, the real count is capped "
        "at execute time",
    }


async def statement_execute(ctx: ActionContext, p: PostgresStatement, plan: Evidence) -> Evidence:
    async with _connect(ctx, p.connection) as conn:
        rows, status = await _run_in_transaction(conn, p, p.max_rows)
    return {"rowsAffected": rows, "status": status, "committed": True, "estimatedRows": plan.get("estimatedRows")}


POSTGRES_STATEMENT = ActionDef(
    name="postgresStatement", params=PostgresStatement, target=_statement_target,
    plan=statement_plan, execute=statement_execute, idempotent=False, requires_approval=True,
)
