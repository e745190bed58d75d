"""Local stand-ins for the services the runbooks talk about.

Nothing here is imported by the operator itself. These modules exist so that remedy's
actions, its integration tests and the demo act on real processes (real sockets, real
HTTP status codes, real Redis keys, a real MongoDB wire protocol) instead of mocks, on a
machine without Docker: ``demoapp`` plays the gateway, orders, payments, inventory and
reconcile services, ``mongowire`` plays a MongoDB server that answers currentOp/killOp.
"""
