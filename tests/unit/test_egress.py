"""The egress allowlist (remedy.clients.egress): parsing, and checks after DNS resolution."""

from __future__ import annotations

import pytest

from remedy.clients.egress import EgressPolicy


def policy(text: str) -> EgressPolicy:
    return EgressPolicy.from_text(text)


@pytest.mark.parametrize(("allow", "url", "ok"), [
    ("127.0.0.0/8", "http://127.0.0.1:9/x", True),
    ("127.0.0.1:8080", "http://127.0.0.1:8080/x", True),
    ("127.0.0.1:8080", "http://127.0.0.1:8081/x", False),
    ("10.0.0.0/8", "http://169.254.169.254/latest/meta-data/", False),
    ("", "http://127.0.0.1/", False),
    ("hooks.example.com", "https://hooks.example.com/services/x", True),
    ("hooks.example.com", "https://evil.example.com/", False),
    ("*.svc.cluster.local", "http://gateway.shop.svc.cluster.local:8000/reset", True),
    ("*.svc.cluster.local", "http://svc.cluster.local.evil.example/", False),
    ("[::1]:8080", "http://[::1]:8080/", True),
    ("127.0.0.0/8", "http://no-such-host.invalid/", False),
])
async def test_check_url(allow: str, url: str, ok: bool) -> None:
    assert (await policy(allow).check_url(url) is None) is ok


async def test_names_are_checked_by_what_they_resolve_to() -> None:
    # "localhost" resolves to loopback: allowed by a loopback CIDR, refused by another one,
    # although the name itself is listed nowhere.
    assert await policy("127.0.0.0/8").check_url("http://localhost:9/") is None
    why = await policy("10.0.0.0/8").check_url("http://localhost:9/")
    assert why is not None and "127.0.0.1" in why and "not on the operator's egress allowlist" in why


def test_every_resolved_address_must_be_allowed() -> None:
    p = policy("10.0.0.0/8")
    assert p.check_resolved("svc", 80, ["10.1.2.3"]) is None
    assert p.check_resolved("svc", 80, ["10.1.2.3", "169.254.169.254"]) is not None


async def test_guarded_session_refuses_before_sending() -> None:
    from remedy.clients.egress import DestinationNotAllowedError, session_factory

    session = session_factory(policy("10.0.0.0/8"))(2.0)
    async with session:
        with pytest.raises(DestinationNotAllowedError, match=r"169\.254\.169\.254"):
            async with session.get("http://169.254.169.254/latest/meta-data/"):
                pass
        with pytest.raises(DestinationNotAllowedError):
            async with session.post("http://localhost:9/", data=b"x"):
                pass


# --- issue 20: link-local / metadata always refused; redirects never followed ------------------


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",      # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",             # the same, in hex
    "http://[2002:a9fe:a9fe::1]/",            # 6to4 of 169.254.169.254
    "http://[64:ff9b::a9fe:a9fe]/",           # NAT64 of 169.254.169.254
    "http://[fe80::1]/",
])
async def test_metadata_and_link_local_are_refused_even_under_a_covering_cidr(url: str) -> None:
    why = await policy("0.0.0.0/0 ::/0").check_url(url)
    assert why is not None and "link-local / cloud metadata" in why


async def test_covering_cidr_still_allows_ordinary_addresses() -> None:
    assert await policy("0.0.0.0/0 ::/0").check_url("http://10.1.2.3:8080/") is None
    assert await policy("0.0.0.0/0 ::/0").check_url("http://[::ffff:10.1.2.3]:8080/") is None


def test_a_listed_name_resolving_to_metadata_is_refused() -> None:
    # A host-name entry trusts the name's DNS, but never as far as the metadata service.
    p = policy("metadata.example")
    assert p.check_resolved("metadata.example", 80, ["10.0.0.1"]) is None
    why = p.check_resolved("metadata.example", 80, ["169.254.169.254"])
    assert why is not None and "169.254.169.254" in why


async def test_ip_literals_are_checked_without_a_resolver() -> None:
    # aiohttp does not call the resolver for an IP literal: the check before sending must see it.
    p = policy("127.0.0.1/32")
    assert await p.check_url("http://127.0.0.1:9/") is None
    why = await p.check_url("http://127.0.0.2:9/")
    assert why is not None and "127.0.0.2" in why


async def test_guarded_session_never_follows_a_redirect() -> None:
    from aiohttp import web

    from remedy.clients.egress import redirect_location, session_factory
    from tests.fixtures.helpers import serve_http

    hits: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/from":
            raise web.HTTPFound("/to")
        return web.Response(text="followed")

    # Even a caller asking for redirects gets the 3xx itself.
    async with serve_http(moved) as base, session_factory(policy("127.0.0.1/32"))(5.0) as session, \
            session.get(f"{base}/from", allow_redirects=True) as resp:
        assert resp.status == 302
        assert redirect_location(resp.status, resp.headers) == "/to"
    assert hits == ["/from"]


async def test_the_prometheus_client_never_follows_a_redirect() -> None:
    from aiohttp import web

    from remedy.base.errors import RetryableError
    from remedy.lifecycle.verify import query
    from tests.fixtures.helpers import serve_http

    hits: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path.startswith("/api/"):
            raise web.HTTPFound("/elsewhere")
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    async with serve_http(moved) as base:
        with pytest.raises(RetryableError, match="TooManyRedirects"):
            await query(base, "up", 3.0)
    assert hits == ["/api/v1/query"], "the redirect target was requested"
