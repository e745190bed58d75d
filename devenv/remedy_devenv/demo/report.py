"""What the demo prints: each scenario's timeline (one line per milestone, seconds since the
incident was injected), the summary table, and the hints for ``--keep``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .stack import NS, Stack
from .support import say


@dataclass
class Outcome:
    name: str
    trigger: str
    action: str
    seconds: float | None
    result: str
    ok: bool


@dataclass
class Timeline:
    """Milestones of one scenario, each printed once, timed from ``start()``."""

    t0: float = 0.0
    seen: set[str] = field(default_factory=set)

    def start(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, key: str, text: str) -> None:
        if key in self.seen:
            return
        self.seen.add(key)
        print(f"    +{self.elapsed():6.1f}s  {text}", flush=True)

    def __contains__(self, key: str) -> bool:
        return key in self.seen


def summary(outcomes: Sequence[Outcome]) -> None:
    say()
    say("summary (thresholds shortened for the demo):")
    rows = [("scenario", "trigger", "action", "time to remediate", "result")]
    rows += [(o.name, o.trigger, o.action, f"{o.seconds:.1f}s" if o.seconds is not None else "-", o.result)
             for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), flush=True)
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths), flush=True)
    ok = sum(o.ok for o in outcomes)
    print(f"  {ok}/{len(outcomes)} scenarios ended as expected", flush=True)


def keep_running(st: Stack) -> None:
    assert st.cp is not None and st.bin_dir is not None
    p = st.ports
    say()
    say("everything keeps running (--keep). Point kubectl and a browser at it:")
    print(f"    export KUBECONFIG={st.cp.admin_kubeconfig}", flush=True)
    print(f"    export PATH={st.bin_dir}:$PATH      # the built kubectl", flush=True)
    print(f"    kubectl -n {NS} get remediations,remediationpolicies,deployments,replicasets", flush=True)
    print(f"    Prometheus:       http://127.0.0.1:{p['prometheus']}/alerts", flush=True)
    print(f"    Alertmanager:     http://127.0.0.1:{p['alertmanager']}/#/alerts", flush=True)
    print(f"    operator metrics: http://127.0.0.1:{p['metrics']}/metrics", flush=True)
    print("    demo services:    " + ", ".join(f"{r} {st.url(r)}" for r in st.apps), flush=True)
    print(f"    logs:             {st.state / 'logs'}", flush=True)
    say("press Ctrl-C to stop everything and remove the state dir")
    while True:
        time.sleep(3600)
