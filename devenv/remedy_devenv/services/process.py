"""A server process on loopback with all its state in one directory: start (wait until it
answers, else raise with the last log lines), stop (polite signal, then SIGKILL), a pid file
so a later run can find and stop it. Each real server is a subclass.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, ClassVar

from ..testkit import HOST

DEFAULT_STATE_DIR = Path.home() / ".cache" / "remedy" / "run" / "services"

ScrapeConfig = tuple[str, Sequence[str]]


class ServiceError(RuntimeError):
    """A managed server failed to start, stop or answer."""


def _http(method: str, url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie answers kill(0) but is gone for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)


class ManagedProcess:
    """One server process owned by a state directory (config, data, log, pid file)."""

    name: ClassVar[str] = "process"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, state_dir: Path | str, port: int, host: str = HOST) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None

    # -- to override -------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config / initialise data before the process starts."""

    def is_ready(self) -> bool:
        raise NotImplementedError

    def after_start(self) -> None:
        """Run once the server answers (create databases, ...)."""

    def owned_paths(self) -> list[Path]:
        """Directories a process of ours runs in (cwd); guards against killing reused pids."""
        return [self.state_dir]

    @property
    def cwd(self) -> Path:
        return self.state_dir

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- common ------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """Pid of our running process (from this object or the pid file), else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) and self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False
        return any(cwd == p or p in cwd.parents for p in map(Path.resolve, self.owned_paths()))

    @property
    def running(self) -> bool:
        return self.pid() is not None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 30.0) -> None:
        """Start (killing a stale process of the same state dir first) and wait until ready."""
        self.stop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        log: IO[bytes]
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with {code} during start; last log lines "
                    f"({self.log_file}):\n{self.tail()}"
                )
            if self._probe():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} not ready on {self.host}:{self.port} after {timeout:.0f}s; "
                    f"last log lines ({self.log_file}):\n{self.tail()}"
                )
            time.sleep(0.1)
        self.after_start()

    def _probe(self) -> bool:
        try:
            return self.is_ready()
        except (OSError, ConnectionError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Polite signal, then SIGKILL to the whole process group after `timeout`."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, self.stop_signal)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                while self._alive(pid) and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _pid_alive(pid)

    def purge(self) -> None:
        """Stop and delete all state."""
        self.stop()
        for path in {self.state_dir, *self.owned_paths()}:
            shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()




def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    return float(duration)
