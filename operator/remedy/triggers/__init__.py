"""Triggers: where firings come from (Alertmanager webhook, Prometheus polling)."""
