"""Issue 12: which failures of a Kubernetes call mean "nothing changed" (RetryableError, the
engine may plan again) and which leave the outcome unknown (AmbiguousOutcomeError, the engine
observes the target). Pure classification; the behaviour on the real API server is in
tests/e2e/test_trust.py and tests/reliability/test_faults.py."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from remedy.base.errors import AmbiguousOutcomeError, PermanentError, RetryableError, TargetNotFoundError
from remedy.clients.kube import translate, translate_transport


def api_error(status: int, body: dict[str, object] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body or {"message": "m"})
    return exc


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_on_a_write_is_ambiguous_and_on_a_read_retryable(status: int) -> None:
    assert isinstance(translate(api_error(status), "patch Deployment a/b", mutating=True), AmbiguousOutcomeError)
    assert isinstance(translate(api_error(status), "Deployment a/b"), RetryableError)


def test_429_and_conflicts_on_a_write_mean_nothing_was_applied() -> None:
    assert isinstance(translate(api_error(429), "patch", mutating=True), RetryableError)
    conflict = translate(api_error(409), "patch", mutating=True)
    assert isinstance(conflict, RetryableError) and conflict.reason == "TargetChanged"


def test_a_failed_json_patch_test_is_target_changed_other_422s_are_permanent() -> None:
    generic = {"message": "the server rejected our request due to an error in our request", "reason": "Invalid",
               "details": {}}
    failed_test = translate(api_error(422, generic), "patch", mutating=True)
    assert isinstance(failed_test, RetryableError) and failed_test.reason == "TargetChanged"
    invalid = {"message": "Deployment.apps \"a\" is invalid: spec.replicas: Invalid value: -1",
               "details": {"causes": [{"field": "spec.replicas", "message": "must be >= 0"}]}}
    err = translate(api_error(422, invalid), "patch", mutating=True)
    assert isinstance(err, PermanentError) and "must be >= 0" in err.message


def test_404_stays_not_found() -> None:
    assert isinstance(translate(api_error(404), "Deployment a/b", mutating=True), TargetNotFoundError)


@pytest.mark.parametrize("exc", [
    urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"),  # type: ignore[arg-type]
    urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
    ConnectionResetError(104, "reset"),
])
def test_a_lost_answer_on_a_write_is_ambiguous(exc: BaseException) -> None:
    assert isinstance(translate_transport(exc, "patch", mutating=True), AmbiguousOutcomeError)
    assert isinstance(translate_transport(exc, "read", mutating=False), RetryableError)


def test_a_refused_connection_sent_nothing() -> None:
    refused = urllib3.exceptions.MaxRetryError(
        None, "/x", urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    err = translate_transport(refused, "patch", mutating=True)
    assert isinstance(err, RetryableError) and not isinstance(err, AmbiguousOutcomeError)
