"""The Alertmanager receiver never answers 5xx, whatever the body: deeply nested, huge, slow,
malformed or hypothesis-generated. A real 10,000-alert group fits the limit; an oversized
one is a 413 that is counted and logged with its group key. Sizes go to
bench/results/security-receiver.json."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fixtures.helpers import results_dir
from tests.security.alert_groups import encoded
from tests.security.conftest import SecOperator

MAX_BODY = 16 << 20  # the operator's default REMEDY_WEBHOOK_MAX_BODY


def post(op: SecOperator, body: bytes, content_type: str = "application/json") -> int:
    req = urllib.request.Request(op.webhook_url, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {op.webhook_token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (ConnectionError, urllib.error.URLError):
        return 0  # the server may close early on an oversized upload; that is not a 5xx


def rejected(op: SecOperator, code: str) -> float:
    text = urllib.request.urlopen(op.metrics_url, timeout=5).read().decode()
    m = re.search(rf'remedy_webhook_rejected_total\{{code="{code}"\}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def test_nested_and_malformed_bodies_are_400s(sec_operator: SecOperator) -> None:
    op = sec_operator
    cases = {
        "array depth 1000": b"[" * 1000 + b"]" * 1000,
        "object depth 1000": b'{"a":' * 1000 + b"1" + b"}" * 1000,
        "array depth 100000": b"[" * 100_000 + b"]" * 100_000,
        "nested labels": json.dumps({"version": "4", "status": "firing", "alerts": []}).encode()[:-1]
        + b', "groupLabels": ' + b'{"x":' * 900 + b"1" + b"}" * 900 + b"}",
        "truncated": b'{"version": "4", "alerts": [',
        "not utf-8": b'\xff\xfe{"version": "4"}',
        "nan": b'{"version": "4", "status": "firing", "alerts": [NaN]}',
        "empty": b"",
        "huge number": b'{"version": "4", "status": "firing", "alerts": [], "x": 1' + b"0" * 5000 + b"}",
    }
    got = {name: post(op, body) for name, body in cases.items()}
    assert all(400 <= code < 500 for code in got.values()), got
    assert got["array depth 1000"] == got["object depth 1000"] == 400, got


@seed(1313)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
                        max_leaves=40),
       junk=st.binary(max_size=200))
def test_generated_bodies_never_get_a_5xx(sec_operator: SecOperator, doc: object, junk: bytes) -> None:
    shaped = {"version": "4", "status": "firing", "alerts": [doc]}
    for body in (json.dumps(doc).encode(), json.dumps(shaped).encode(), junk):
        code = post(sec_operator, body)
        assert code < 500, (code, body[:200])


def test_slow_bodies_get_408_within_the_deadline(sec_operator: SecOperator) -> None:
    """30 authenticated clients each promise 100 bytes and send one a second; the read deadline
    (2 s in this operator) answers each with 408 instead of holding them."""
    host, port = "127.0.0.1", int(sec_operator.webhook_url.split(":")[2].split("/")[0])
    before = rejected(sec_operator, "408")

    async def slow_client() -> tuple[int, float]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write((f"POST /alertmanager HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {sec_operator.webhook_token}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode())
        await writer.drain()
        status = 0
        for _ in range(20):
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=1.0)
            except TimeoutError:
                writer.write(b" ")
                await writer.drain()
                continue
            if line.startswith(b"HTTP/1.1"):
                status = int(line.split()[1])
                break
        writer.close()
        return status, time.monotonic() - started

    async def run() -> list[tuple[int, float]]:
        return await asyncio.gather(*(slow_client() for _ in range(30)))

    results = asyncio.run(run())
    assert all(code == 408 for code, _ in results), results
    assert max(seconds for _, seconds in results) < 8, results
    assert rejected(sec_operator, "408") - before == 30


def test_real_groups_fit_and_oversized_groups_are_counted_and_logged(sec_operator: SecOperator) -> None:
    op = sec_operator
    big = encoded(10_000, seed=1313)
    started = time.monotonic()
    assert post(op, big) == 200
    accepted_s = time.monotonic() - started
    before = rejected(op, "413")
    key = '{}:{alertname="OversizedGroupProbe"}'
    oversized = encoded(10_000, seed=7, group_key=key) + b" " * (MAX_BODY - len(big) + 1)
    assert len(oversized) > MAX_BODY
    code = post(op, oversized)
    assert code in (413, 0), code
    assert rejected(op, "413") - before == 1
    log = op.log_path.read_text(errors="replace")
    assert 'group key {}:{alertname="OversizedGroupProbe"}' in log
    out = results_dir() / "security-receiver.json"
    out.write_text(json.dumps({"test": "tests/security/test_receiver.py", "seed": 1313,
                               "group_10000_alerts_bytes": len(big), "group_5000_alerts_bytes": len(encoded(5000, seed=1313)),
                               "max_body_bytes": MAX_BODY, "headroom_ratio": round(MAX_BODY / len(big), 2),
                               "group_10000_accept_seconds": round(accepted_s, 2)}, indent=1) + "\n")


def test_wrong_content_is_never_a_5xx_even_without_a_token(sec_operator: SecOperator) -> None:
    req = urllib.request.Request(sec_operator.webhook_url, data=b"[" * 5000, method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        code = 200
    except urllib.error.HTTPError as e:
        code = e.code
    assert code == 401
    with socket.create_connection(("127.0.0.1", int(sec_operator.webhook_url.split(":")[2].split("/")[0])), timeout=5) as s:
        s.sendall(b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Authorization: Bearer " + sec_operator.webhook_token.encode() + b"\r\n\r\nzz\r\n")
        answer = s.recv(200)
    assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 408", b"") or not answer.startswith(b"HTTP/1.1 5"), answer
