"""Local development and test environment: real processes standing in for a real cluster.

Nothing here is imported by the operator itself. These modules exist so that remedy's
actions, its integration tests and the demo act on real processes (real sockets, real HTTP
status codes, real Redis keys, a real MongoDB wire protocol) instead of mocks, on a machine
without Docker. For example ``demoapp`` plays the runbooks' gateway, orders, payments,
inventory and reconcile services, and ``mongowire`` plays a MongoDB server that answers
currentOp/killOp.
"""
