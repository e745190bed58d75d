"""The exception tree, with retry intent carried by type.

Actions, clients, the lifecycle and the policy machinery raise these; one place (``remedy.handlers``) maps them to
kopf's ``TemporaryError`` / ``PermanentError``. Every message is safe to show to a user:
it never contains a secret value (only a Secret's name and key).

    RemedyError
    ├── RetryableError          transient: API 5xx, timeouts, conflicts, unreachable server;
    │                           carries ``delay`` seconds; the lifecycle retries with backoff
    └── PermanentError          retrying cannot help; the Remediation ends Failed
        ├── InvalidSpecError    the object is invalid beyond what the CRD schema can reject
        ├── TargetNotFoundError the workload / key / breaker named does not exist
        ├── ForbiddenError      RBAC or the target refused (401/403)
        ├── SecretRefError      a referenced Secret or key is missing
        └── OverCapError        the plan exceeds a blast-radius cap (refused, never truncated)
    AmbiguousOutcomeError       a MUTATING request was sent and its outcome is unknown
                                (timeout, connection reset, 5xx/504 after sending). Neither
                                retryable (something may have changed) nor permanent: the
                                lifecycle calls the action's ``observe`` probe and continues from
                                what it sees (see remedy.actions.base), never re-plans
    SkipError                   not a failure: the action decided not to act
                                (e.g. UpstreamUnhealthy, NothingToDo); the Remediation
                                ends Skipped with ``reason``
"""

from __future__ import annotations


class RemedyError(Exception):
    """Base of every error remedy raises on purpose. ``reason`` is a one-word CamelCase code."""

    reason = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class RetryableError(RemedyError):
    """A transient failure: the same step may succeed later."""

    reason = "TransientError"

    def __init__(self, message: str, *, delay: float = 5.0, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class PermanentError(RemedyError):
    """Retrying cannot help; the user must change something."""

    reason = "Failed"


class InvalidSpecError(PermanentError):
    reason = "InvalidSpec"


class TargetNotFoundError(PermanentError):
    reason = "TargetNotFound"


class ForbiddenError(PermanentError):
    reason = "Forbidden"


class SecretRefError(PermanentError):
    reason = "SecretNotFound"


class OverCapError(PermanentError):
    reason = "OverCap"


class AmbiguousOutcomeError(RemedyError):
    """A mutating call may or may not have been applied; only observing the target can tell."""

    reason = "OutcomeUnknown"

    def __init__(self, message: str, *, delay: float = 1.0, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class SkipError(RemedyError):
    """The action chose not to act; not an error for the user, but visible."""

    reason = "Skipped"

    def __init__(self, message: str, *, reason: str = "Skipped", evidence: dict[str, object] | None = None) -> None:
        super().__init__(message, reason=reason)
        self.evidence = evidence or {}
