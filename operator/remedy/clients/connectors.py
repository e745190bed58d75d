"""The seam between actions and the outside world (httpx's transport idea).

Actions never construct a Redis/PostgreSQL/MongoDB/HTTP client themselves: they ask the
``Connectors`` in their context. Production uses the defaults below; unit tests pass their own.
Each factory applies the timeouts it is given: no call without a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..base.constants import OPERATOR_APP_NAME


class RedisFactory(Protocol):
    async def __call__(self, url: str, password: str | None, timeout: float) -> Any: ...


class PostgresFactory(Protocol):
    async def __call__(self, dsn: str, password: str | None, connect_timeout: float, statement_timeout: float) -> Any: ...


class MongoFactory(Protocol):
    def __call__(self, uri: str, timeout: float) -> Any: ...


class HttpSessionFactory(Protocol):
    def __call__(self, timeout: float) -> Any: ...


async def _default_redis(url: str, password: str | None, timeout: float) -> Any:
    import redis.asyncio as aioredis

    return aioredis.from_url(
        url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


async def _default_postgres(dsn: str, password: str | None, connect_timeout: float, statement_timeout: float) -> Any:
    import psycopg

    kwargs: dict[str, Any] = {"connect_timeout": max(1, int(connect_timeout)), "autocommit": True}
    if password is not None:
        kwargs["password"] = password
    kwargs["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    kwargs["application_name"] = OPERATOR_APP_NAME
    return await psycopg.AsyncConnection.connect(dsn, **kwargs)


def _default_mongo(uri: str, timeout: float) -> Any:
    from pymongo import AsyncMongoClient

    ms = int(timeout * 1000)
    return AsyncMongoClient(
        uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms, appname=OPERATOR_APP_NAME
    )


def _default_http(timeout: float) -> Any:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


@dataclass(frozen=True)
class Connectors:
    redis: RedisFactory = _default_redis
    postgres: PostgresFactory = _default_postgres
    mongo: MongoFactory = _default_mongo
    http: HttpSessionFactory = _default_http
