"""Params of the PostgreSQL actions (runbooks 002, 003)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, Duration, SecretKeyRef


class PostgresConnection(ApiModel):
    dsn_secret_ref: SecretKeyRef = Field(description="libpq DSN or URL (may include the password).")
    password_secret_ref: SecretKeyRef | None = None
    connect_timeout: Duration = "5s"
    statement_timeout: Duration = "10s"


BackendState = Literal["active", "idle in transaction", "idle in transaction (aborted)"]


def _active_only() -> list[BackendState]:
    return ["active"]


class TerminatePostgresQueries(ApiModel):
    """Cancel, then terminate, backends running longer than a threshold (pg_stat_activity)."""

    connection: PostgresConnection
    min_duration: Duration = Field(description="Backends whose query/transaction runs at least this long.")
    states: list[BackendState] = Field(default_factory=_active_only)
    database: str | None = None
    user: str | None = None
    application_name: str | None = None
    query_pattern: str | None = Field(
        default=None, description="POSIX regex (PostgreSQL `~`, case-sensitive) the query text must match."
    )
    cancel_first: bool = True
    grace: Duration = Field(default="5s", description="Wait after pg_cancel_backend before pg_terminate_backend.")
    max_queries: int = Field(default=20, ge=1, le=10_000)


class PostgresStatement(ApiModel):
    """A parameterized statement in a transaction that rolls back above maxRows affected rows."""

    connection: PostgresConnection
    sql: str = Field(min_length=1, max_length=10_000, description="Uses %s placeholders for params.")
    params: list[str] = Field(default_factory=list)
    max_rows: int = Field(default=1, ge=0, le=1_000_000)
