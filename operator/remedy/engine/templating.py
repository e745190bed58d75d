"""Render a policy's Remediation template with an alert's or series' labels.

Jinja2's SandboxedEnvironment (no attribute access to internals) with StrictUndefined: a
template that refers to a label the alert does not carry is an error on the policy, never a
silent empty string that would, say, restart a Deployment named "".
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ..errors import InvalidSpecError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def render(value: Any, variables: dict[str, Any], path: str = "template") -> Any:
    """Render every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return _ENV.from_string(value).render(**variables)
        except TemplateError as exc:
            raise InvalidSpecError(f"{path}: {exc.message or exc}", reason="TemplateError") from None
    if isinstance(value, dict):
        return {k: render(v, variables, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
