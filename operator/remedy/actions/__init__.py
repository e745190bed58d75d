"""Actions: one module per family, each action a typed params model plus plan/execute/verify."""
