"""PostgreSQL (initdb on first start, scram-sha-256, roles on demand), run as an unprivileged
user when started as root.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..testkit import HOST
from .process import ManagedProcess, ServiceError, _write_secret


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
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, port, host)
        self._password = password
        self._run_as = run_as
        # extra server settings (-c name=value), e.g. max_connections for a benchmark's backends
        self.settings = dict(settings or {})

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
            *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")),
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
