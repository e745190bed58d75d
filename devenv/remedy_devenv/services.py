"""Start and stop real Redis, PostgreSQL, Prometheus and Alertmanager on loopback.

Why: the integration tests and the demo need the real servers (fakes hide the behaviour the
actions depend on: pg_stat_activity, Redis auth, alert routing), and every caller should start
them the same way, on 127.0.0.1 only, with all state in one directory and nothing touched
outside it. Each server is a `ManagedProcess`: `start()` waits until it answers (raising with
the last log lines if it does not), `stop()` sends the polite signal then SIGKILL, and a pid
file lets a later run (or `scripts/services down`) find and stop it.

Run as a script: `python -m remedy_devenv.services up|down|status [NAME...]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import yaml

from .testkit import HOST
from .testkit import free_port as free_port  # re-exported: tests import it from here

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


class RedisServer(ManagedProcess):
    """redis-server without persistence, optionally behind `requirepass`."""

    name = "redis"

    def __init__(
        self, state_dir: Path | str, port: int, password: str | None = None, host: str = HOST
    ) -> None:
        super().__init__(state_dir, port, host)
        self.password = password

    def command(self) -> list[str]:
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
            "--dir", str(self.state_dir), "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def is_ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"


class PostgresServer(ManagedProcess):
    """A throwaway PostgreSQL cluster: superuser `remedy` (scram), database `app`.

    PostgreSQL refuses to run as root, so as root it runs as `run_as` (default: `postgres` if
    that user exists, else a `remedy` system user created on demand). When that user cannot
    reach the state dir (pytest's /tmp/pytest-of-root and /root are 0700) the cluster lives in
    /tmp/remedy-postgres-<hash of state dir> instead.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") waits for every client
    superuser = "remedy"
    database = "app"

    def __init__(
        self,
        state_dir: Path | str,
        port: int,
        password: str | None = None,
        run_as: str | None = None,
        host: str = HOST,
    ) -> None:
        super().__init__(state_dir, port, host)
        self._password = password
        self._run_as = run_as

    # -- identity and places -----------------------------------------------------------
    @property
    def run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        if self._run_as is None:
            self._run_as = os.environ.get("REMEDY_PG_USER") or _postgres_user()
        return self._run_as

    @property
    def base_dir(self) -> Path:
        user = self.run_as
        if user is None or _can_traverse(self.state_dir, user):
            return self.state_dir
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"remedy-postgres-{digest}"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sockets"

    @property
    def cwd(self) -> Path:
        return self.base_dir

    def owned_paths(self) -> list[Path]:
        return [self.state_dir, self.base_dir]

    @property
    def password_file(self) -> Path:
        return self.state_dir / "password"

    @property
    def password(self) -> str:
        if self._password is None:
            try:
                self._password = self.password_file.read_text().strip()
            except FileNotFoundError:
                self._password = secrets.token_urlsafe(18)
        return self._password

    def dsn_for(self, user: str, password: str, database: str | None = None) -> str:
        q = urllib.parse.quote
        return (
            f"postgresql://{q(user, safe='')}:{q(password, safe='')}@{self.host}:{self.port}/"
            f"{q(database or self.database, safe='')}"
        )

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.superuser, self.password)

    @property
    def url(self) -> str:
        return self.dsn

    # -- lifecycle ---------------------------------------------------------------------
    def _as_user(self, cmd: list[str]) -> list[str]:
        user = self.run_as
        if user is None:
            return cmd
        # setpriv execs in place (runuser forks), so the pid we record is the postmaster's.
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]

    def _mkdir_owned(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.run_as is not None:
            ent = pwd.getpwnam(self.run_as)
            os.chown(path, ent.pw_uid, ent.pw_gid)
        path.chmod(0o700)

    def prepare(self) -> None:
        for d in (self.base_dir, self.data_dir, self.socket_dir):
            if d != self.state_dir:
                self._mkdir_owned(d)
        if (self.data_dir / "PG_VERSION").exists():
            return
        pwfile = self.base_dir / ".initdb-pw"
        _write_secret(pwfile, self.password + "\n")
        if self.run_as is not None:
            ent = pwd.getpwnam(self.run_as)
            os.chown(pwfile, ent.pw_uid, ent.pw_gid)
        try:
            res = subprocess.run(
                self._as_user([
                    _pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                    "--pwfile", str(pwfile), "--auth=scram-sha-256", "-E", "UTF8",
                    "--locale=C", "--no-sync", "--no-instructions",
                ]),
                cwd=self.base_dir, capture_output=True, text=True, check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise ServiceError(f"initdb failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        _write_secret(self.password_file, self.password + "\n")

    def command(self) -> list[str]:
        return self._as_user([
            _pg_bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ])  # fmt: skip

    def _connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            self.dsn_for(self.superuser, self.password, dbname), connect_timeout=2, autocommit=True
        )

    def is_ready(self) -> bool:
        import psycopg

        try:
            with self._connect():
                return True
        except psycopg.OperationalError:
            return False

    def after_start(self) -> None:
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                from psycopg import sql

                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def create_role(self, name: str, password: str, *, grant_database: bool = True) -> str:
        """Create (or reset the password of) a LOGIN, non-superuser role; return its DSN."""
        from psycopg import sql

        with self._connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            if grant_database:
                conn.execute(
                    sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(
                        sql.Identifier(self.database), sql.Identifier(name)
                    )
                )
        if grant_database:  # PostgreSQL 15 no longer lets PUBLIC create in schema public
            with self._connect(self.database) as conn:
                conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(name)))
        return self.dsn_for(name, password)


class PrometheusServer(ManagedProcess):
    """Prometheus with a generated config; `configure()` rewrites it and reloads."""

    name = "prometheus"

    def __init__(
        self,
        state_dir: Path | str,
        port: int,
        scrape_configs: Sequence[ScrapeConfig] = (),
        rules: Sequence[str] = (),
        alertmanager_url: str | None = None,
        scrape_interval: str = "15s",
        evaluation_interval: str = "15s",
        host: str = HOST,
    ) -> None:
        super().__init__(state_dir, port, host)
        self.scrape_configs = list(scrape_configs)
        self.rules = list(rules)
        self.alertmanager_url = alertmanager_url
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval

    @property
    def config_file(self) -> Path:
        return self.state_dir / "prometheus.yml"

    @property
    def rules_dir(self) -> Path:
        return self.state_dir / "rules"

    def render(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval
                if _seconds(self.scrape_interval) < 10
                else "10s",
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(self.rules_dir / "*.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in self.scrape_configs
            ],
        }
        if self.alertmanager_url:
            u = urllib.parse.urlsplit(self.alertmanager_url)
            am: dict[str, Any] = {"scheme": u.scheme or "http", "static_configs": [{"targets": [u.netloc]}]}
            if u.path.strip("/"):
                am["path_prefix"] = u.path
            config["alerting"] = {"alertmanagers": [am]}
        return config

    def prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.rules_dir.mkdir(exist_ok=True)
        for old in self.rules_dir.glob("*.yml"):
            old.unlink()
        for i, text in enumerate(self.rules):
            (self.rules_dir / f"rules-{i:02d}.yml").write_text(text)
        self.config_file.write_text(yaml.safe_dump(self.render(), sort_keys=False))
        promtool = shutil.which("promtool")
        if promtool:
            res = subprocess.run(
                [promtool, "check", "config", str(self.config_file)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if res.returncode != 0:
                raise ServiceError(f"promtool rejects {self.config_file}:\n{res.stdout}{res.stderr}")

    def command(self) -> list[str]:
        return [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.state_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
        ]

    def is_ready(self) -> bool:
        return _http("GET", f"{self.url}/-/ready", timeout=1)[0] == 200

    def configure(
        self,
        *,
        scrape_configs: Sequence[ScrapeConfig] | None = None,
        rules: Sequence[str] | None = None,
        alertmanager_url: str | None = None,
    ) -> None:
        """Replace the given parts of the config (None keeps them) and reload if running."""
        if scrape_configs is not None:
            self.scrape_configs = list(scrape_configs)
        if rules is not None:
            self.rules = list(rules)
        if alertmanager_url is not None:
            self.alertmanager_url = alertmanager_url
        self.prepare()
        if self.running:
            self.reload()

    def reload(self) -> None:
        status, body = _http("POST", f"{self.url}/-/reload", timeout=10)
        if status != 200:
            raise ServiceError(f"prometheus reload failed ({status}): {body.decode(errors='replace')}")

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        qs = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _http("GET", f"{self.url}/api/v1/{path}{qs}", timeout=10)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise ServiceError(f"prometheus {path} failed ({status}): {doc.get('error', body[:200])}")
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns `data.result` (a list of {metric, value} for vectors)."""
        data = self._api("query", {"query": promql})
        result = data["result"]
        return list(result) if isinstance(result, list) else [{"value": result}]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._api("alerts")["alerts"])


class AlertmanagerServer(ManagedProcess):
    """Alertmanager routing every alert to one webhook (remedy's receiver) with a bearer token."""

    name = "alertmanager"

    def __init__(
        self,
        state_dir: Path | str,
        port: int,
        webhook_url: str,
        token_file: Path | str,
        group_wait: str = "10s",
        group_interval: str = "1m",
        repeat_interval: str = "4h",
        group_by: Sequence[str] = ("alertname",),
        host: str = HOST,
    ) -> None:
        super().__init__(state_dir, port, host)
        self.webhook_url = webhook_url
        self.token_file = Path(token_file).absolute()
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.repeat_interval = repeat_interval
        self.group_by = list(group_by)

    @property
    def config_file(self) -> Path:
        return self.state_dir / "alertmanager.yml"

    def render(self) -> dict[str, Any]:
        return {
            "route": {
                "receiver": "remedy",
                "group_by": self.group_by,
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [
                {
                    "name": "remedy",
                    "webhook_configs": [
                        {
                            "url": self.webhook_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {
                                    "type": "Bearer",
                                    "credentials_file": str(self.token_file),
                                }
                            },
                        }
                    ],
                }
            ],
        }

    def prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.render(), sort_keys=False))
        amtool = shutil.which("amtool")
        if amtool:
            res = subprocess.run(
                [amtool, "check-config", str(self.config_file)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if res.returncode != 0:
                raise ServiceError(f"amtool rejects {self.config_file}:\n{res.stdout}{res.stderr}")

    def command(self) -> list[str]:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        return [
            binary or "alertmanager",
            f"--config.file={self.config_file}",
            f"--storage.path={self.state_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--cluster.listen-address=",
        ]

    def is_ready(self) -> bool:
        return _http("GET", f"{self.url}/-/ready", timeout=1)[0] == 200

    def configure(self, *, webhook_url: str | None = None, token_file: Path | str | None = None) -> None:
        """Point the receiver elsewhere and reload if running."""
        if webhook_url is not None:
            self.webhook_url = webhook_url
        if token_file is not None:
            self.token_file = Path(token_file).absolute()
        self.prepare()
        if self.running:
            self.reload()

    def reload(self) -> None:
        status, body = _http("POST", f"{self.url}/-/reload", timeout=10)
        if status != 200:
            raise ServiceError(f"alertmanager reload failed ({status}): {body.decode(errors='replace')}")

    def alerts(self) -> list[dict[str, Any]]:
        status, body = _http("GET", f"{self.url}/api/v2/alerts", timeout=10)
        if status != 200:
            raise ServiceError(f"alertmanager alerts failed ({status})")
        return list(json.loads(body))


# -- helpers ---------------------------------------------------------------------------
def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    return float(duration)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise ServiceError(f"{name} not found (install postgresql or run scripts/install-deps)")


def _postgres_user() -> str:
    for user in ("postgres", "remedy"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "remedy"],
        check=True, capture_output=True,
    )  # fmt: skip
    return "remedy"


def _can_traverse(path: Path, user: str) -> bool:
    """Whether `user` may reach `path` (x on every ancestor; `path` itself is created later)."""
    ent = pwd.getpwnam(user)
    gids = set(os.getgrouplist(user, ent.pw_gid))
    probe = path
    while not probe.exists():
        probe = probe.parent
    for d in [probe, *probe.parents]:
        st = d.stat()
        if st.st_uid == ent.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in gids:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True


# -- command line ----------------------------------------------------------------------
NAMES = ("redis", "postgres", "prometheus", "alertmanager")


def _env_port(var: str, default: int) -> int:
    return int(os.environ.get(var, default))


def build(name: str, root: Path) -> ManagedProcess:
    """The server `name` with the defaults of docs/ports.md (overridable by REMEDY_* env)."""
    d = root / name
    am_port = _env_port("REMEDY_AM_PORT", 19093)
    if name == "redis":
        return RedisServer(d, _env_port("REMEDY_REDIS_PORT", 16379), os.environ.get("REMEDY_REDIS_PASSWORD"))
    if name == "postgres":
        return PostgresServer(d, _env_port("REMEDY_PG_PORT", 15432), os.environ.get("REMEDY_PG_PASSWORD"))
    if name == "prometheus":
        metrics = _env_port("REMEDY_METRICS_PORT", 18081)
        port = _env_port("REMEDY_PROM_PORT", 19090)
        rules = [Path(p).read_text() for p in os.environ.get("REMEDY_PROM_RULE_FILES", "").split(":") if p]
        return PrometheusServer(
            d, port,
            scrape_configs=[("prometheus", [f"{HOST}:{port}"]), ("remedy", [f"{HOST}:{metrics}"])],
            rules=rules,
            alertmanager_url=f"http://{HOST}:{am_port}",
            scrape_interval=os.environ.get("REMEDY_PROM_SCRAPE_INTERVAL", "5s"),
            evaluation_interval=os.environ.get("REMEDY_PROM_EVAL_INTERVAL", "5s"),
        )  # fmt: skip
    if name == "alertmanager":
        token_file = Path(os.environ.get("REMEDY_WEBHOOK_TOKEN_FILE", str(d / "webhook-token")))
        if not token_file.exists():
            _write_secret(token_file, secrets.token_urlsafe(24) + "\n")
        webhook = _env_port("REMEDY_WEBHOOK_PORT", 18080)
        return AlertmanagerServer(
            d, am_port,
            webhook_url=os.environ.get("REMEDY_WEBHOOK_URL", f"http://{HOST}:{webhook}/alertmanager"),
            token_file=token_file,
            group_wait="1s", group_interval="5s", repeat_interval="5m",
        )  # fmt: skip
    raise ValueError(f"unknown service {name!r}; choose from {', '.join(NAMES)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(NAMES))
    parser.add_argument(
        "--state-dir", type=Path,
        default=Path(os.environ.get("REMEDY_STATE_DIR", str(DEFAULT_STATE_DIR))),
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    names: list[str] = list(args.names) or list(NAMES)
    if unknown := sorted(set(names) - set(NAMES)):
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if args.action == "down":
        names.reverse()
    rc = 0
    for name in names:
        server = build(name, args.state_dir)
        if args.action == "up":
            if server.running:
                print(f"{name}: already running (pid {server.pid()}) {_shown(server)}")
                continue
            t0 = time.monotonic()
            try:
                server.start(timeout=args.timeout)
            except ServiceError as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                rc = 1
                continue
            print(f"{name}: up in {time.monotonic() - t0:.1f}s (pid {server.pid()}) {_shown(server)}")
        elif args.action == "down":
            was = server.pid()
            server.stop()
            print(f"{name}: stopped (pid {was})" if was else f"{name}: not running")
        else:
            pid = server.pid()
            if pid is None:
                rc = 3
            print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'} {_shown(server)} log={server.log_file}")
    return rc


def _shown(server: ManagedProcess) -> str:
    """The URL to print: passwords are replaced by the file that holds them."""
    if isinstance(server, PostgresServer):
        return f"{server.dsn.replace(urllib.parse.quote(server.password, safe=''), '***')} password-file={server.password_file}"
    if isinstance(server, RedisServer) and server.password:
        return f"redis://:***@{server.host}:{server.port}/0"
    if isinstance(server, AlertmanagerServer):
        return f"{server.url} webhook={server.webhook_url} token-file={server.token_file}"
    return server.url


if __name__ == "__main__":
    sys.exit(main())
