"""Params of purgeIdempotencyKeys (runbook 000): break stale idempotency locks.

Field names vary across versions of the admin API (the runbook says so), hence ``fieldMap``
with the runbook's names as defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .common import ApiModel, Duration, SecretKeyRef, cel
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
    page_size: int = Field(default=1000, ge=1, le=10_000,
                           description="Records per listing request (?limit=); a nextCursor in the answer is followed.")
    concurrency: int = Field(default=8, ge=1, le=64, description="Re-check + DELETE requests in flight at once.")


class IdempotencyRedisBackend(ApiModel):
    connection: RedisConnection
    pattern: str = Field(default="idem:*", min_length=1, description="Keys holding records (hash or JSON string).")
    batch_size: int = Field(default=1000, ge=1, le=10_000,
                            description="SCAN COUNT and keys judged per server-side script call (bounds how long one call holds Redis).")


class PurgeIdempotencyKeys(ApiModel):
    model_config = ConfigDict(json_schema_extra=cel(
        ("has(self.http) || has(self.redis)", "purgeIdempotencyKeys needs http or redis settings"),
        ("self.backend != 'http' || has(self.http)", "backend http needs purgeIdempotencyKeys.http"),
        ("self.backend != 'redis' || has(self.redis)", "backend redis needs purgeIdempotencyKeys.redis"),
    ))

    backend: Literal["http", "redis"]
    http: IdempotencyHttpBackend | None = None
    redis: IdempotencyRedisBackend | None = None
    grace: Duration = Field(default="30s", description="A lock counts as stale when lock_expires_at < now - grace.")
    min_replay_count: int | None = Field(default=None, ge=0)
    tenant: str | None = None
    key_prefix: str | None = None
    # Evidence is bounded (count, digest, first 20 keys) whatever the size, so the cap is a
    # safety limit the user sets for the backlog at hand, not a limit of the status object.
    max_keys: int = Field(default=100, ge=1, le=100_000_000,
                          description="Cap: more stale keys than this is refused at plan time; execute never purges more.")
    field_map: IdempotencyFieldMap = Field(default_factory=IdempotencyFieldMap)
