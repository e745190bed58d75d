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
