"""Prometheus with scrape targets, rule files and an Alertmanager, reloadable; query and
alerts through its HTTP API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..testkit import HOST
from .process import ManagedProcess, ScrapeConfig, ServiceError, _http, _seconds


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
