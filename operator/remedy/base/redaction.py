"""One place that removes secret values, in every encoding, from whatever the operator writes.

Why: a Secret value reaches text the operator writes by many routes (an endpoint echoing the
token in a 401 body, a driver quoting a DSN in an exception, a JSON-escaped copy inside a
response excerpt). Redacting only the raw string misses ``Tok\\"en`` (JSON), ``Tok%22en``
(URL), base64 and partial copies. So every value read from a Secret is registered here
(``register``, called by ``ActionContext.secret``), and every sink (status patches, Events,
log records, exception messages) passes its text through ``redact``.

What counts as a leak of a value ``s``: any of its encodings (raw, JSON-escaped with and
without ``ensure_ascii``, URL-encoded in both flavours, base64 standard and URL-safe at every
byte alignment, hex), or any substring of length >= MIN_FRAGMENT of one of them. Values
shorter than MIN_FRAGMENT are redacted when an encoding appears whole.

The registry is process-wide and bounded (oldest values are forgotten first): sinks such as
the log handler have no idea which Remediation a line belongs to, and redacting every known
value everywhere is the safe side.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import traceback
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

REDACTED = "<redacted>"
MIN_FRAGMENT = 8
MAX_VALUES = 4096


def encodings(value: str) -> set[str]:
    """Every textual form of ``value`` the operator could plausibly emit."""
    raw = value.encode("utf-8", errors="surrogatepass")
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),  # what a URL path keeps unescaped ('/')
        raw.hex(),
        repr(value)[1:-1],
    }
    # Go's encoding/json escapes <, > and & as \u003c...; and a text quoted twice (a JSON error
    # body inside a JSON log line, a repr of an escaped excerpt) doubles every escape.
    html_safe = json.dumps(value)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    forms.add(html_safe)
    for once in list(forms):
        forms.add(json.dumps(once)[1:-1])
        forms.add(json.dumps(once, ensure_ascii=False)[1:-1])
        forms.add(repr(once)[1:-1])
    # base64 of the value embedded at byte offset 0, 1 or 2 of a larger buffer: only the
    # characters that depend on the value's bytes alone are kept.
    for offset in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\0" * offset + raw).decode()
            lead = (offset * 4 + 2) // 3 if offset else 0
            tail_bytes = (offset + len(raw)) % 3
            cut = len(text) - (4 if tail_bytes else 0)
            core = text[lead:cut]
            if core:
                forms.add(core)
            if offset == 0:
                forms.add(text)
                forms.add(text.rstrip("="))
    return {f for f in forms if f}


_DSN_SCHEMES = frozenset({"redis", "rediss", "postgres", "postgresql", "mongodb", "mongodb+srv", "mysql", "amqp", "amqps"})
_DSN_SECRET_KEYS = re.compile(r"pass|secret|token|key|auth|cred|sig", re.IGNORECASE)


def split_connection_string(value: str) -> tuple[list[str], bool]:
    """(the secret parts of ``value``, whether it is a connection string with public parts).

    A URL or libpq DSN from a Secret (``redis://:pw@10.0.0.7:6379/0``,
    ``host=db password=pw``) is mostly *not* secret: its host and port appear in plans, errors
    and other objects. Fragment-redacting the whole string would mask every "127.0.0.1:" in
    every message; so only the credential parts (the password, secret-looking query or
    key=value parameters) are redacted down to 8-character fragments, and the full string
    only whole. Any other value is secret in full.
    """
    if "://" in value and " " not in value.strip():
        try:
            parts = urlsplit(value)
        except ValueError:
            return [value], False
        # Database/cache URLs only: in an http(s) URL from a Secret (a Slack webhook) the path
        # itself is the credential.
        if parts.scheme.lower() in _DSN_SCHEMES and parts.netloc:
            # The password; a user name is not a credential (and "remedy" masked everywhere
            # would make every message unreadable).
            secret = [parts.password, unquote(parts.password)] if parts.password else []
            secret += [v for k, v in parse_qsl(parts.query, keep_blank_values=False) if _DSN_SECRET_KEYS.search(k) and v]
            return secret, True
    pairs = re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", value)
    if {k.lower() for k, _ in pairs} & {"host", "hostaddr", "dbname"} and re.fullmatch(r"(\s*\w+\s*=\s*('(?:[^'\\]|\\.)*'|\S+))+\s*", value):
        return [v.strip("'") for k, v in pairs if _DSN_SECRET_KEYS.search(k) and v.strip("'")], True
    return [value], False


class Redactor:
    """Registered secret values and their encodings; ``redact`` masks them in any text."""

    def __init__(self, max_values: int = MAX_VALUES) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._max = max_values
        self._lock = threading.Lock()
        self._grams: frozenset[str] = frozenset()
        self._whole: tuple[str, ...] = ()

    def register(self, value: str | None) -> None:
        if not value:
            return
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            self._values[value] = None
            while len(self._values) > self._max:
                self._values.popitem(last=False)
            self._rebuild()

    @property
    def active(self) -> bool:
        return bool(self._grams or self._whole)

    def forget_all(self) -> None:
        with self._lock:
            self._values.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        grams: set[str] = set()
        whole: set[str] = set()
        for value in self._values:
            secret_parts, public_shape = split_connection_string(value)
            for part in secret_parts:
                for form in encodings(part):
                    if len(form) >= MIN_FRAGMENT:
                        grams.update(form[i:i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1))
                    else:
                        whole.add(form)
            if public_shape:  # the whole DSN/URL too, in every encoding, but not its fragments
                whole.update(f for f in encodings(value) if len(f) >= 4)
        self._grams = frozenset(grams)
        # Longest first, so a short form inside a longer one does not split it.
        self._whole = tuple(sorted(whole, key=len, reverse=True))

    def redact(self, text: str) -> str:
        grams, whole = self._grams, self._whole
        if not text or (not grams and not whole):
            return text
        n = len(text)
        covered = bytearray(n)
        if grams and n >= MIN_FRAGMENT:
            for i in range(n - MIN_FRAGMENT + 1):
                if text[i:i + MIN_FRAGMENT] in grams:
                    covered[i:i + MIN_FRAGMENT] = b"\1" * MIN_FRAGMENT
        for form in whole:
            start = text.find(form)
            while start != -1:
                covered[start:start + len(form)] = b"\1" * len(form)
                start = text.find(form, start + 1)
        if not any(covered):
            return text
        out: list[str] = []
        i = 0
        while i < n:
            if covered[i]:
                while i < n and covered[i]:
                    i += 1
                out.append(REDACTED)
            else:
                j = i
                while j < n and not covered[j]:
                    j += 1
                out.append(text[i:j])
                i = j
        return "".join(out)

    def redact_obj(self, obj: Any) -> Any:
        """``redact`` applied to every string (keys too) of a JSON-like structure."""
        if not self._grams and not self._whole:
            return obj
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {self.redact(k) if isinstance(k, str) else k: self.redact_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.redact_obj(v) for v in obj]
        return obj


REDACTOR = Redactor()


def register(value: str | None) -> None:
    """Remember a secret value (and its encodings) so every sink redacts it."""
    REDACTOR.register(value)


def redact(text: str) -> str:
    return REDACTOR.redact(text)


def redact_obj(obj: Any) -> Any:
    return REDACTOR.redact_obj(obj)


# --- the sinks ------------------------------------------------------------------------------


class RedactingStore:
    """Wraps the lifecycle's Store: every status patch is redacted before it leaves."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = await self._inner.get_object(plural, namespace, name)
        return obj

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = await self._inner.patch_status(plural, namespace, name, redact_obj(status),
                                                             resource_version)
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RedactingRecorder:
    """Wraps an Event recorder: reason and message are redacted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self._inner.event(obj, type_, redact(reason), redact(message))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RedactingLogFilter(logging.Filter):
    """Renders each record (message, args, traceback) and redacts it, so no formatter or
    handler downstream (plain, JSON, kopf's Event poster) sees a secret value."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not REDACTOR.active:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not kill logging
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(text)
        record.args = ()
        return True


def install_log_filter() -> None:
    """On the root handlers and kopf's per-object logger (whose records become Events)."""
    flt = RedactingLogFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingLogFilter) for f in handler.filters):
            handler.addFilter(flt)
    for name in ("kopf.objects", "remedy"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactingLogFilter) for f in lg.filters):
            lg.addFilter(flt)
