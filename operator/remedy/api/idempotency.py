"""Params of purgeIdempotencyKeys (runbook 000): break stale idempotency locks.

Field names vary across versions of the admin API (the runbook says so), hence ``fieldMap``
with the runbook's names as defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, Duration, SecretKeyRef
from .redis import RedisConnection


class IdempotencyFieldMap(ApiModel):
    key: str = "key"
    tenant: str = "tenant"
    state: str = "state"
    lock_expires_at: str = "lock_expires_at"
    replay_count: str = "replay_count"
    in_progress_value: str = "in_progress"


class IdempotencyHttpBackend(ApiModel):
    base_url: str = Field(pattern=r"^https?://", description="e.g. https://api.stage.example.com")
    token_secret_ref: SecretKeyRef = Field(description="Bearer token (admin scope).")
    tenant: str | None = Field(default=None, description="Sent as X-Tenant when set.")
    timeout: Duration = "10s"


class IdempotencyRedisBackend(ApiModel):
    connection: RedisConnection
    pattern: str = Field(default="idem:*", min_length=1, description="Keys holding records (hash or JSON string).")


class PurgeIdempotencyKeys(ApiModel):
    backend: Literal["http", "redis"]
    http: IdempotencyHttpBackend | None = None
    redis: IdempotencyRedisBackend | None = None
    grace: Duration = Field(default="30s", description="A lock counts as stale when lock_expires_at < now - grace.")
    min_replay_count: int | None = Field(default=None, ge=0)
    tenant: str | None = None
    key_prefix: str | None = None
    # le=2000: every purged key is listed in status.plan and status.result, and the whole object
    # must stay well under etcd's 1.5 MiB limit; thousands of stale locks is another incident.
    max_keys: int = Field(default=100, ge=1, le=2000, description="Cap: more stale keys than this is refused (not truncated).")
    field_map: IdempotencyFieldMap = Field(default_factory=IdempotencyFieldMap)
