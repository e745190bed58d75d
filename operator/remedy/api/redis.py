"""Params of the Redis actions (runbooks 001, 002): delete stuck locks and leftover chaos keys."""

from __future__ import annotations

from pydantic import Field

from .common import ApiModel, Duration, SecretKeyRef, cel


class RedisConnection(ApiModel):
    """Where Redis is: a URL (redis://host:port/db or rediss://) from a Secret, optional password."""

    url_secret_ref: SecretKeyRef
    password_secret_ref: SecretKeyRef | None = None
    timeout: Duration = "5s"


class DeleteRedisKeys(ApiModel):
    """SCAN + UNLINK keys matching a pattern with a literal prefix, in batches, up to maxKeys."""

    connection: RedisConnection
    pattern: str = Field(
        min_length=1, max_length=512, description="Glob pattern, e.g. lock:purchase:* or chaos:payments:*",
        # A CEL raw string (r'...'): "\s" is no escape sequence in a plain CEL string literal.
        json_schema_extra=cel((r"!self.matches(r'^[*?\s]*$')",
                               "deleteRedisKeys.pattern must name keys: empty, blank and wildcard-only patterns such as * are refused")),
    )
    allow_wide_match: bool = Field(default=False, description="Allow a pattern without a specific literal prefix (e.g. * or lock:*).")
    max_keys: int = Field(default=1000, ge=1, le=100_000_000,
                          description="Cap: a match of more keys is refused at plan time; execute never deletes more.")
    batch_size: int = Field(default=1000, ge=1, le=10_000, description="SCAN COUNT per round trip.")
    sample_size: int = Field(default=20, ge=0, le=100, description="How many key names to show in plan/result (the rest is counted and digested).")
