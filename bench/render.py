"""Generate the figure tables of docs/reliability.md, docs/benchmarks.md and docs/security.md from bench/results/*.json.

Why this exists: figures typed into docs by hand drift from the runs that produced them (the
issue found OutcomeUnknown 120 in the doc vs 32 in the JSON). Every table between the markers

    <!-- generated:NAME -->
    ...
    <!-- /generated:NAME -->

is rewritten from the committed JSON; tests/unit/test_docs_generated.py fails when the committed
docs differ from what this script produces. Prose must not repeat figures.

    .venv/bin/python bench/render.py          # rewrite the docs
    .venv/bin/python bench/render.py --check  # exit 1 and name the stale blocks
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOCS = {"reliability": REPO / "docs" / "reliability.md", "benchmarks": REPO / "docs" / "benchmarks.md",
        "security": REPO / "docs" / "security.md", "argocd": REPO / "docs" / "argocd.md",
        "scale": REPO / "docs" / "scale.md"}
MARK = re.compile(r"(<!-- generated:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)
DASH = "–"


def load(name: str, results: Path = RESULTS) -> dict[str, Any]:
    path = results / name
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def newest(pattern: str, results: Path = RESULTS) -> dict[str, Any]:
    paths = sorted(results.glob(pattern))
    return load(paths[-1].name, results) if paths else {}


def fmt(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in sorted(value.items())) or DASH
    if isinstance(value, list):
        return " / ".join(fmt(v) for v in value) or DASH
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figures(data: dict[str, Any], skip: tuple[str, ...] = ("test",)) -> str:
    """Every figure of one result file, one row per top-level key (nested dicts inline).
    Diagnostic samples (keys ending in "Samples") stay in the JSON; a seed is an identifier."""
    if not data:
        return "_no result file committed_\n"
    inline = ("phases", "reasons")  # small dicts read well in one cell
    rows = [[k, str(v) if k == "seed" else v] for k, v in sorted(data.items())
            if k not in skip and not k.endswith("Samples") and (not isinstance(v, dict) or k in inline)]
    out = table(["Figure", "Value"], rows)
    nested = {k: v for k, v in sorted(data.items()) if isinstance(v, dict) and v
              and all(isinstance(x, dict) for x in v.values())}
    for key, per in nested.items():
        cols = sorted({c for row in per.values() for c in row})
        out += f"\n`{key}`:\n\n" + table([key] + cols, [[name] + [row.get(c) for c in cols] for name, row in sorted(per.items())])
    flat = {k: v for k, v in sorted(data.items()) if isinstance(v, dict) and k not in nested and k not in inline}
    if flat:
        out += "\n" + table(["Figure", "Value"], [[k, v] for k, v in flat.items()])
    return out


def _first(data: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in data:
            return data[k]
    return None


def summary(results: Path) -> str:
    rows = []
    for path in sorted(results.glob("reliability-*.json")):
        d = load(path.name, results)
        dup = _first(d, "duplicates_audit", "duplicates")
        if "duplicates_http" in d:
            dup = f"{fmt(dup)} (audit) / {fmt(d['duplicates_http'])} (HTTP)"
        rows.append([path.name, d.get("recordedAt"), dup, _first(d, "lost"),
                     _first(d, "outcome_unknown", "outcomeUnknown"), _first(d, "never_executed")])
    return table(["Result file", "Recorded", "Duplicates", "Lost", "OutcomeUnknown", "Never executed"], rows)


def faults(results: Path) -> str:
    d = load("reliability-faults.json", results)
    if not d:
        return "_no result file committed_\n"
    rows = [[case, c.get("faultFired"), c.get("phase"), c.get("reason"), c.get("auditEffectiveOnTarget"),
             c.get("auditEffectiveWrites"), c.get("state"), c.get("exactlyOnce") and c.get("plannedState")]
            for case, c in sorted(d.get("cases", {}).items())]
    return (table(["action/fault", "fault fired", "phase", "reason", "2xx patches of target (audit)",
                   "2xx writes total (audit)", "end state", "exactly once at planned state"], rows)
            + f"\nRecorded {d.get('recordedAt')}; witness: {d.get('witness')}.\n")


def alert_latency(results: Path) -> str:
    d = newest("alert_latency-*.json", results)
    if not d:
        return "_no result file committed_\n"
    lat, storm = d.get("latency", {}), d.get("storm", {})
    rows = [[f"alert-to-action latency {q}", f"{lat['remedy'][q] * 1000:.1f} ms",
             f"{lat['baseline'][q] * 1000:.1f} ms", f"{lat['ratio'][q]:.1f}x"] for q in ("p50", "p90", "p99", "max")]
    rows.append(["storm throughput", f"{storm['remedy']['alerts_per_s']:,.0f} alerts/s ({storm['remedy']['elapsed_s']} s)",
                 f"{storm['noop']['alerts_per_s']:,.0f} alerts/s (no-op, {storm['noop']['elapsed_s']} s)",
                 f"{storm['ratio']:.4f}"])
    answer = storm["remedy"].get("answer_s") or {}
    if answer:
        rows.append(["storm: webhook answer p50 / max", f"{answer['p50'] * 1000:.0f} / {answer['max'] * 1000:.0f} ms",
                     f"{storm['noop']['answer_s']['p50'] * 1000:.0f} / {storm['noop']['answer_s']['max'] * 1000:.0f} ms", ""])
    if "children_settled_after_s" in storm:
        rows.append(["storm: Remediations (LIST on the API server)",
                     f"{storm['children_created']} (all created {storm['children_settled_after_s']} s after the last answer)",
                     "100 fingerprints", ""])
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(storm["remedy"].get("outcomes", {}).items()))
        rows.append(["storm: webhook outcomes", outcomes, "", ""])
    rtt = lat.get("remedy_webhook_rtt", {})
    brk = lat.get("remedy_breakdown") or {}
    if brk.get("children"):
        for key, what in (("sent_to_accepted_s", "alert sent -> Accepted (webhook, create, watch, kopf; before issue 23 "
                                                 "also GET, Pending PATCH)"),
                          ("accepted_to_intent_s", "Accepted -> intent (approval gate, SubjectAccessReview, plan, intent PATCH)")):
            q = brk[key]
            rows.append([f"breakdown: {what}", f"p50 {q['p50'] * 1000:.1f} / p99 {q['p99'] * 1000:.1f} ms", "", ""])
    calls = lat.get("remedy_api_requests_per_child") or {}
    if calls:
        rows.append(["API requests per child on remediations (API server's count)",
                     ", ".join(f"{k}: {v:g}" for k, v in calls.items()), "", ""])
    out = table(["figure", "remedy", "baseline (same run)", "ratio (remedy / baseline)"], rows)
    prof = lat.get("remedy_profile") or {}
    if prof:
        out += ("\nCPU profile of the operator during the latency phase (py-spy, " + f"{prof['rate_hz']} Hz, "
                f"{prof.get('busy_samples', prof['samples']):,} busy of {prof['samples']:,} samples; each busy "
                "sample is charged to the innermost frame of a known area):" + "\n\n")
        out += table(["code area", "share of busy CPU samples"],
                     [[a, f"{v * 100:.1f} %"] for a, v in prof["share_by_area"].items()])
        out += "\n" + table(["hottest frames (self)", "share of busy samples"],
                            [[f, f"{v * 100:.1f} %"] for f, v in prof["top_self_frames"]])
    out += (f"\nRun {d.get('date')}: `{d.get('command')}`; load average {fmt(d['machine'].get('loadavg_start'))} at "
            f"start, {fmt(d['machine'].get('loadavg_end'))} at end. Webhook round trip p50 "
            f"{rtt.get('p50', 0) * 1000:.0f} ms, p99 {rtt.get('p99', 0) * 1000:.0f} ms. Checks: "
            + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(d.get("checks", {}).items())) + ".\n")
    return out


def bulk_redis(results: Path) -> str:
    d = load("bulk-redis.json", results)
    if not d:
        return "_no result file committed_\n"
    rows = []
    for part, floor in (("purge", "pipelined redis-py SCAN + HMGET + UNLINK"),
                        ("prefix_delete", "redis-cli --scan | xargs redis-cli unlink")):
        x = d[part]
        rows.append([part.replace("_", " "), f"{x['remedy_best_s']:.2f} s", f"{floor}: {x['floor_best_s']:.2f} s",
                     f"{x['ratio_vs_floor']:.2f}x", f"{x['peak_rss_mib']:.1f} MiB", f"{x['max_status_bytes']:,} B",
                     " / ".join(f"{v:.2f}" for v in x["remedy_s"]), " / ".join(f"{v:.2f}" for v in x["floor_s"])])
    out = table(["run", "remedy (best)", "floor (best, same run)", "ratio floor/remedy", "remedy peak RSS",
                 "status size", "remedy rounds (s)", "floor rounds (s)"], rows)
    checks = d.get("checks", {})
    out += (f"\n{fmt(d['n'])} keys per run ({fmt(d['stale'])} stale in the purge runs), seed {d['seed']}, "
            f"{d['rounds']} rounds; `{d.get('command')}`; load average at end {fmt(d['machine'].get('loadavg_at_end'))}. "
            f"Server-side checks: {sum(bool(v) for v in checks.values())} of {len(checks)} passed.\n")
    return out


def scale_summary(results: Path) -> str:
    d = load("summary.json", results)
    if not d:
        return "_no result file committed_\n"
    rows = [[k, d.get(k), d.get("goals", {}).get(k), (d.get("sources", {}).get(k) or {}).get("file"),
             d.get("reasons", {}).get(k, "")] for k in d.get("goals", {})]
    return table(["figure", "value", "goal", "source", "note"], rows)


def memory(results: Path) -> str:
    d = load("memory.json", results)
    if not d:
        return "_no result file committed_\n"
    out = table(["step", "policies", "Remediations (final)", "operator RSS", "peak RSS"],
                [[r["step"], r["policies"], r["remediations"], f"{r['rss_mib']:.1f} MiB", f"{r['peak_mib']:.1f} MiB"]
                 for r in d.get("readings", [])])
    out += (f"\nIdle {fmt(d.get('rss_idle_mib'))} MiB; {fmt(d.get('rss_mib_per_100_policies'))} MiB per 100 policies; "
            f"{fmt(d.get('rss_mib_per_1000_remediations'))} MiB per 1,000 Remediations; 10,000 + 1,000: "
            f"{fmt(d.get('rss_mib_10k_remediations_1k_policies'))} MiB"
            + (" (estimated)" if d.get("estimated") else " (measured)")
            + f". `{d.get('command')}`, recorded {d.get('recordedAt')}, load average at end "
            f"{fmt(d.get('machine', {}).get('loadavg_at_end'))}.\n")
    return out


def database_status(results: Path) -> str:
    d = load("database-status.json", results)
    if not d:
        return "_no result file committed_\n"
    pg, syn, mg = d["postgres_real"], d["postgres_synthetic"], d["mongo"]
    rows = [
        ["terminatePostgresQueries", pg["backends"], "real backends on a real PostgreSQL (pg_sleep)",
         f"{pg['status_bytes']:,} B", DASH, f"{pg['plan_s']} s", f"{pg['execute_s']} s"],
        ["terminatePostgresQueries", syn["identities"], "synthetic rows through the action's evidence builders",
         f"{syn['status_bytes']:,} B", f"{syn['full_listing_status_bytes']:,} B", DASH, DASH],
        ["killSlowMongoOps", mg["ops"], "operations of the wire double, real pymongo",
         f"{mg['status_bytes']:,} B", f"~{mg['full_listing_status_bytes_estimated']:,} B", f"{mg['plan_s']} s",
         f"{mg['execute_s']} s ({mg['execute_current_op_reads']} currentOp reads)"],
    ]
    out = table(["action", "planned identities", "how", "status (plan + result)", "listing every identity",
                 "plan", "execute"], rows)
    checks = d.get("checks", {})
    out += (f"\nGoal {d.get('goal_bytes')} B at 10,000. `{d.get('command')}`, recorded {d.get('recordedAt')}, load "
            f"average at end {fmt(d.get('machine', {}).get('loadavg_at_end'))}. Checks (the servers as witnesses): "
            f"{sum(bool(v) for v in checks.values())} of {len(checks)} passed"
            + (": failed " + ", ".join(k for k, v in sorted(checks.items()) if not v) if not all(checks.values()) else "")
            + ".\n")
    return out


BLOCKS: dict[str, Callable[[Path], str]] = {
    "database-status": database_status,
    "memory": memory,
    "bulk-redis": bulk_redis,
    "scale-summary": scale_summary,
    "summary": summary,
    "faults": faults,
    "alert-latency": alert_latency,
}
for _name in ("crash-consistency", "crash-consistency-ci", "ha", "outages-apiserver", "outages-data-plane",
              "load-smoke", "fuzz-specs", "fuzz-webhook", "security", "chart-security", "safety-flapping",
              "safety-mass-oom", "fencing", "dry-run-dryrun", "dry-run-shadow"):
    BLOCKS[_name] = functools.partial(lambda n, results: figures(load(f"reliability-{n}.json", results)), _name)
for _name in ("validating-only", "forged-labels"):  # tests/security (issue 20)
    BLOCKS[_name] = functools.partial(lambda n, results: figures(load(f"security-{n}.json", results)), _name)
BLOCKS["load"] = lambda results: figures(load("load-2000-500.json", results))
# Issue 20 (docs/security.md): each written by the test the threat-model row names.
for _name in ("redaction_bound", "redaction_bound_operator", "egress_redirects", "forged_children"):
    BLOCKS[_name.replace("_", "-")] = functools.partial(lambda n, results: figures(load(f"{n}.json", results)), _name)
BLOCKS["argocd"] = lambda results: figures(load("argocd.json", results))  # tests/e2e/test_argocd.py
BLOCKS["ci-runs"] = lambda results: figures(load("ci-runs.json", results), skip=("command",))  # bench/ci_runs.py
BLOCKS["shards"] = lambda results: figures(newest("shards-[0-9]*.json", results))
BLOCKS["namespace-pickup"] = lambda results: figures(
    {k: v for k, v in load("namespace-pickup.json", results).items() if k != "waits"})


def render(text: str, results: Path = RESULTS) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}; known: {sorted(BLOCKS)}")
        return m.group(1) + BLOCKS[name](results) + m.group(4)
    return MARK.sub(sub, text)


def stale(results: Path = RESULTS) -> list[str]:
    """Docs whose generated blocks differ from what the committed JSON gives."""
    return [str(p.relative_to(REPO)) for p in DOCS.values() if render(p.read_text(), results) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale docs (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for doc in bad:
            print(f"{doc} is stale: run .venv/bin/python bench/render.py", file=sys.stderr)
        return 1 if bad else 0
    for p in DOCS.values():
        p.write_text(render(p.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
