"""The policy machinery: a RemediationPolicy turns firings into guarded child Remediations
and its children's outcomes into status, autonomy, pauses and escalation.

firing (what a trigger hands over), fire (firing -> at most one child: guards, dedup,
episodes), refresh (status from children, self-pause, escalation), autonomy, holds and
windows, silences, templating.
"""
