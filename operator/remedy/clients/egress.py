"""Where the operator may send HTTP requests: an admin-owned allowlist, checked after DNS.

Why: a Remediation names URLs (httpRequest, notify webhooks, breaker endpoints, the purge
admin API), and the operator sends them with its own network position and, often, a token
from a Secret. Without a limit anyone who may create a Remediation can make the operator
call any address it can reach (cloud metadata, internal admin APIs) or carry a token to a
server they own. The allowlist is operator configuration (Helm value ``egress.allow``,
environment ``REMEDY_EGRESS_ALLOW``), so only whoever installs the operator owns it.

Entries (comma or whitespace separated):

    10.0.0.0/8          any address in a CIDR, any port
    127.0.0.1:8080      one address, one port ("[::1]:8080" for IPv6)
    api.example.com     a host name (exact), any port; resolved addresses are not checked
    *.svc.cluster.local a DNS suffix
    host.example:443    a host name and port

A host name entry trusts that name's DNS. An address or CIDR entry is checked against every
address the name resolves to (all must be allowed), so a name pointing at 169.254.169.254 is
refused even though its spelling looks harmless. The same check runs again inside the HTTP
client's resolver at connect time, so a DNS answer that changes between check and send
(rebinding) is refused too. An empty allowlist allows nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..base.errors import PermanentError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefusedError(OSError):
    """A destination not on the allowlist (an OSError so HTTP clients abort the connect)."""


@dataclass(frozen=True)
class Rule:
    network: IPNetwork | None = None
    host: str | None = None  # lower-case; leading "*." means suffix
    port: int | None = None

    def matches_port(self, port: int) -> bool:
        return self.port is None or self.port == port


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def parse_rules(text: str | None) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for raw in (text or "").replace(",", " ").split():
        host, port = _split_port(raw.strip())
        try:
            rules.append(Rule(network=ipaddress.ip_network(host, strict=False), port=port))
        except ValueError:
            rules.append(Rule(host=host.lower().rstrip("."), port=port))
    return tuple(rules)


def _host_rule_matches(rule: Rule, host: str) -> bool:
    assert rule.host is not None
    if rule.host.startswith("*."):
        return host.endswith(rule.host[1:])
    return host == rule.host


@dataclass(frozen=True)
class EgressPolicy:
    rules: tuple[Rule, ...]

    @classmethod
    def from_text(cls, text: str | None) -> EgressPolicy:
        return cls(parse_rules(text))

    def describe(self) -> str:
        return ", ".join(
            (str(r.network) if r.network else str(r.host)) + (f":{r.port}" if r.port else "") for r in self.rules
        ) or "(empty: no destination allowed)"

    def name_allowed(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return any(r.host is not None and r.matches_port(port) and _host_rule_matches(r, host) for r in self.rules)

    def address_allowed(self, address: str, port: int) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(r.network is not None and r.matches_port(port) and ip in r.network for r in self.rules)

    def check_resolved(self, host: str, port: int, addresses: list[str]) -> str | None:
        """None when allowed, else why not."""
        if self.name_allowed(host, port):
            return None
        if not addresses:
            return f"{host}:{port} does not resolve"
        refused = [a for a in addresses if not self.address_allowed(a, port)]
        if refused:
            return (f"{host}:{port} resolves to {', '.join(sorted(set(refused)))}, not on the operator's "
                    f"egress allowlist ({self.describe()})")
        return None

    async def check_url(self, url: str) -> str | None:
        """Resolve the URL's host and check every address. None when allowed, else why not."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return f"{url!r} has an invalid port"
        if not host:
            return f"{url!r} has no host"
        if self.name_allowed(host, port):
            return None
        addresses = await resolve(host, port)
        return self.check_resolved(host, port, addresses)


async def resolve(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


class AllowlistResolver:
    """aiohttp resolver that refuses what the allowlist refuses, at connect time."""

    def __init__(self, policy: EgressPolicy) -> None:
        import aiohttp

        self.policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        infos = list(await self._inner.resolve(host, port, family))
        if self.policy.name_allowed(host, port):
            return infos
        why = self.policy.check_resolved(host, port, [str(i["host"]) for i in infos])
        if why:
            raise DestinationRefusedError(why)
        return infos

    async def close(self) -> None:
        await self._inner.close()


class DestinationNotAllowedError(PermanentError):
    """A request to a destination the allowlist refuses; nothing was sent."""

    reason = "DestinationNotAllowed"


class _GuardedRequest:
    """``session.request(...)`` that checks the URL (after DNS) before anything is sent."""

    def __init__(self, policy: EgressPolicy, session: Any, method: str, url: Any, kwargs: dict[str, Any]) -> None:
        self.policy, self.session, self.method, self.url, self.kwargs = policy, session, method, url, kwargs
        self._cm: Any = None

    async def __aenter__(self) -> Any:
        why = await self.policy.check_url(str(self.url))
        if why:
            raise DestinationNotAllowedError(f"{self.method} refused: {why}; nothing was sent")
        self._cm = self.session.request(self.method, self.url, **self.kwargs)
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._cm.__aexit__(*exc)


class GuardedSession:
    """The aiohttp session API the actions use, with every request checked against the
    allowlist first (URLs read from Secrets and built-in default URLs included) and the
    connector's resolver checking again at connect time."""

    def __init__(self, policy: EgressPolicy, session: Any) -> None:
        self.policy, self.session = policy, session

    async def __aenter__(self) -> GuardedSession:
        await self.session.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.session.__aexit__(*exc)

    async def close(self) -> None:
        await self.session.close()

    def request(self, method: str, url: Any, **kwargs: Any) -> _GuardedRequest:
        return _GuardedRequest(self.policy, self.session, method, url, kwargs)

    def get(self, url: Any, **kwargs: Any) -> _GuardedRequest:
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> _GuardedRequest:
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> _GuardedRequest:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: Any, **kwargs: Any) -> _GuardedRequest:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> _GuardedRequest:
        return self.request("DELETE", url, **kwargs)


def session_factory(policy: EgressPolicy) -> Any:
    """A ``Connectors.http`` factory whose sessions reach only allowed destinations."""

    def make(timeout: float) -> GuardedSession:
        import aiohttp

        connector = aiohttp.TCPConnector(resolver=AllowlistResolver(policy), use_dns_cache=False)  # type: ignore[arg-type]
        return GuardedSession(policy, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), connector=connector))

    return make
