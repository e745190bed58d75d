"""The engine: the Remediation lifecycle, guards, verification and escalation. No kopf here."""
