"""Render a policy's Remediation template with an alert's or series' labels.

Jinja2's SandboxedEnvironment (no attribute access to internals) with StrictUndefined: a
template that refers to a label the alert does not carry is an error on the policy, never a
silent empty string that would, say, restart a Deployment named "".
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ..base.errors import InvalidSpecError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Template:
    """Compiling is most of a render's cost (issue 16: a fresh compile per alert in a storm);
    keyed by the source text, so a new policy generation with a changed template compiles anew."""
    return _ENV.from_string(source)


def render(value: Any, variables: dict[str, Any], path: str = "template") -> Any:
    """Render every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return _compiled(value).render(**variables)
        except TemplateError as exc:
            raise InvalidSpecError(f"{path}: {exc.message or exc}", reason="TemplateError") from None
    if isinstance(value, dict):
        return {k: render(v, variables, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
