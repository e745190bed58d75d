"""Run the operator as a real child process (as in a cluster: its own process, its own
kubeconfig), so tests and the demo can SIGKILL and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK_EGRESS = "127.0.0.0/8,::1/128,localhost"


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        # The operator's outbound-HTTP allowlist (REMEDY_EGRESS_ALLOW) defaults to nothing; the
        # demo services and test endpoints all listen on loopback.
        self.env = {"REMEDY_EGRESS_ALLOW": LOOPBACK_EGRESS, **(env or {})}
        self.args = args or ["-A"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1", **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process, closed in stop()
        log.write(f"\n===== operator start #{self.starts + 1} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remedy.cli", "run", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Ready when kopf logs that it started watching (or its first handler ran)."""
        deadline = time.monotonic() + timeout
        marker = f"===== operator start #{self.starts} ====="
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            tail = text[text.rfind(marker):]
            if "Activity 'startup' succeeded" in tail or "Handler '" in tail:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{tail[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"operator not ready within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no status flush, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
