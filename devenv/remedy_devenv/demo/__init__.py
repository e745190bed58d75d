"""`./scripts/demo`: a live incident demo on a real local control plane.

Starts (one progress line each) the Kubernetes control plane with a real node (containerd +
kubelet: the Deployments' pods really run, get OOM-killed and restart), Redis, PostgreSQL, the MongoDB
wire server, Prometheus (the runbooks' alert rules), Alertmanager (routing to remedy's
webhook), the demo services and the operator, then injects the runbooks' incidents one after
another and prints, for each, a timeline: incident injected -> metric/alert -> Remediation
(created by a RemediationPolicy, or applied with kubectl) -> plan -> action -> verification ->
resolved. Ends with a summary table; exits 1 if a scenario did not end as expected.

The Remediation / RemediationPolicy / Secret manifests are docs/cookbook/<scenario>.yaml, with
${PLACEHOLDERS} filled in here and applied with the built kubectl, so the cookbook is tested by
this demo. Thresholds are shortened (1s scrape/evaluation, alerts `for` 2-3s) so a full run
takes a couple of minutes.

Everything runs on 127.0.0.1 in a temporary state dir; Ctrl-C (SIGINT/SIGTERM) at any time
stops every process started here and removes that dir.

Layout, by role:
- ``support``: output, the demo's error types, HTTP and polling helpers;
- ``ports``: docs/ports.md defaults and free-port fallback;
- ``stack``: every process started (for one ``stop()``) and what scenarios use of them,
  including the cookbook manifests;
- ``start``: bringing the stack up, one step per component;
- ``report``: the per-scenario timeline, the summary table, the ``--keep`` hints;
- ``runner``: one scenario from injection to verdict, and ``main``;
- ``remedy_devenv.scenarios``: the scenarios themselves, data plus small functions, one file each.
"""
