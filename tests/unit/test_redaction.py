"""Property test of remedy.base.redaction: whatever a Secret value contains, none of its encodings
(raw, JSON-escaped once or twice, URL-encoded, base64 at any alignment, halves) survives
redaction of a body that echoes it, at any position inside other text."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from remedy.base.redaction import REDACTED, Redactor, split_connection_string
from tests.security.conftest import every_encoding
from tests.security.leaks import ALPHABET, leaks

secret_values = st.text(alphabet=ALPHABET, min_size=8, max_size=48).filter(
    lambda v: len(set(v)) >= 6 and not split_connection_string(v)[1])
context = st.text(alphabet=ALPHABET, max_size=40)


def echo_body(value: str) -> str:
    """What the tests' echoing endpoint answers: a JSON document and one line per encoding."""
    return json.dumps({"token": value, "echo": every_encoding(value)}, ensure_ascii=False) + "\n" + \
        "\n".join(every_encoding(value).values())


@settings(max_examples=400, deadline=None)
@given(value=secret_values, before=context, after=context)
def test_no_encoding_survives(value: str, before: str, after: str) -> None:
    r = Redactor()
    r.register(value)
    text = before + echo_body(value) + after
    out = r.redact(text)
    assert leaks(out, value) == []
    # ... also after the sink quotes it once more (a repr in an error message, a JSON log line).
    assert leaks(r.redact(repr(text)), value) == [] and leaks(r.redact(json.dumps(text)), value) == []
    assert REDACTED in out


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .:/-", max_size=200))
def test_unrelated_text_is_untouched(text: str) -> None:
    r = Redactor()
    r.register("Tok\"en\\Quote-SECRET-77")
    assert r.redact(text) == text


def test_issue_example_is_redacted_everywhere() -> None:
    r = Redactor()
    value = 'Tok"en\\Quote-SECRET-77'
    r.register(value)
    body = json.dumps({"error": "bad token", "got": value})
    assert "SECRET" not in r.redact(f"answered 401; body: {body!r}")
    assert r.redact_obj({"message": body, "conditions": [{"message": body}]}) == {
        "message": r.redact(body), "conditions": [{"message": r.redact(body)}]}


@settings(max_examples=200, deadline=None)
@given(password=st.text(alphabet=ALPHABET.replace("@", "").replace("/", "").replace(":", "").replace("?", "").replace("#", ""),
                        min_size=8, max_size=32).filter(lambda v: len(set(v)) >= 6 and v.strip() == v))
def test_connection_strings_hide_the_password_not_the_host(password: str) -> None:
    """A DSN from a Secret: its password is secret in every encoding and fragment; its host is
    not (plans and errors name it), but the DSN as a whole is still masked."""
    from urllib.parse import quote

    dsn = f"postgresql://remedy:{quote(password, safe='')}@127.0.0.1:15432/app"
    r = Redactor()
    r.register(dsn)
    text = f"connect to 127.0.0.1:15432 failed; dsn {dsn}; {echo_body(password)}"
    out = r.redact(text)
    assert leaks(out, password) == [] and dsn not in out
    assert out.startswith("connect to 127.0.0.1:15432 failed")


def test_http_urls_from_secrets_are_secret_in_full() -> None:
    r = Redactor()
    r.register("https://hooks.slack.com/services/T000/B000/XXXXSECRETPATH")
    assert "XXXXSECRET" not in r.redact("posting to hooks.slack.com/services/T000/B000/XXXXSECRETPATH failed")
