"""An independent leak detector: does a text contain any encoding of a secret value?

Independent of remedy.base.redaction on purpose (a test that reused the redactor's own list of
encodings could not find what the redactor forgets): the encodings here are the ones the
echoing endpoint of the tests produces, plus those JSON adds when the echo is quoted again.
A leak is any substring of length >= MIN of one of them (the issue's definition).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tests.security.conftest import every_encoding

MIN = 8
# Characters with an escape in JSON, URLs, shells or Python reprs, and some non-ASCII.
ESCAPABLE = "\"\\/\b\f\n\r\t'`<>&%+=?#;:,[]{}() \x00\x1f\x7féü€😀"
ALPHABET = ESCAPABLE + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


def forms(value: str) -> set[str]:
    out = set(every_encoding(value).values())
    for f in list(out):
        out.add(json.dumps(f)[1:-1])
        out.add(json.dumps(f, ensure_ascii=False)[1:-1])
    return {f for f in out if f}


def leaks(text: str, value: str) -> list[str]:
    # The redaction marker is not secret content: it must not pair up with a short remainder
    # (say "<redacted>" + 7 chars) into an 8-character "fragment".
    text = text.replace("<redacted>", "\x01")
    found = []
    for f in forms(value):
        if len(f) < MIN:
            continue
        for i in range(len(f) - MIN + 1):
            if f[i:i + MIN] in text:
                found.append(f[i:i + MIN])
                break
    return found


def strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings(v)
    elif obj is not None:
        yield str(obj)


def leaks_in(texts: Iterable[str], value: str) -> list[str]:
    return [leak for t in texts for leak in leaks(t, value)]
