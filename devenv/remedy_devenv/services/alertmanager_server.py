"""Alertmanager routing every alert to one webhook with a bearer token file, reloadable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..testkit import HOST
from .process import ManagedProcess, ServiceError, _http


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
