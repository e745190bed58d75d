"""The process: wiring and what runs once per process rather than per object.

process (settings, clients, the lifecycle, the policy machinery, loops, webhook), loops (the
process-wide background loops), takeover (a shard just acquired), shards (Lease per shard),
history (finished children and ttl), events (Kubernetes Events from any task).
"""
