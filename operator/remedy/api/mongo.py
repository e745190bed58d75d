"""Params of killSlowMongoOps (runbook 004)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, Duration, SecretKeyRef


class MongoConnection(ApiModel):
    uri_secret_ref: SecretKeyRef = Field(description="mongodb:// URI (may include credentials).")
    timeout: Duration = "5s"


class KillSlowMongoOps(ApiModel):
    connection: MongoConnection
    min_secs_running: int = Field(ge=1, le=86400)
    namespace: str | None = Field(default=None, description="Regex on ns (db.collection).")
    op_types: list[Literal["query", "getmore", "insert", "update", "remove", "command"]] = Field(default_factory=list)
    app_name: str | None = None
    max_ops: int = Field(default=10, ge=1, le=10_000)
