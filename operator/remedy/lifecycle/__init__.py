"""The Remediation lifecycle: one Remediation from Pending to a final phase.

machine (the state machine: plan, intent, act, observe, verify), approval (the gate),
authz (the requester's rights, re-reviewed when used), verify (PromQL), gitops (a revert by
GitOps watched after the act), conditions (metav1.Condition helpers), escalation (a person
must look when an outcome stays unknown).
"""
