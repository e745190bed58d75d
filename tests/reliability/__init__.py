"""Reliability suite (issue 8): crash consistency, HA, outages, load, fuzzing, security, safety.

Run alone with `.venv/bin/python -m pytest tests/reliability -q`; every module is marked
`reliability` (and `cluster`), so CI can select it with `-m reliability`. Figures are printed
and written as JSON to bench/results/ (override with REMEDY_RESULTS_DIR); docs/reliability.md
summarises them.
"""
