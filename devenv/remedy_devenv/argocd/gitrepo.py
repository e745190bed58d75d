"""A local git repository as an Argo CD source (``repoURL: file:///...``).

Why: GitOps means "what is committed is what runs"; tests and the demo commit manifests and
let Argo CD pick them up, exactly like a real repository, without a git server. Argo CD's
repo-server clones file:// URLs with the system git (its own e2e fixtures do the same).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

AUTHOR = ["-c", "user.name=remedy-tests", "-c", "user.email=tests@remedy.invalid"]


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str) -> str:
        res = subprocess.run(["git", *AUTHOR, *args], cwd=self.path, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr}")
        return res.stdout.strip()

    def init(self) -> GitRepo:
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.commit({"README.md": "remedy test repository\n"}, "init")
        return self

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files and commit; returns the new revision."""
        for rel, text in files.items():
            path = self.path / rel
            if text is None:
                if path.exists():
                    self.git("rm", "-q", rel)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            self.git("add", rel)
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")
