"""The base: modules every layer may use and that import nothing of remedy.

errors (the exception tree and its retry intent), config (settings from the environment),
constants (every shared name), rfc3339 (every timestamp), redaction (secret values out of
status, Events and logs), malloc (glibc arenas and trim) and observability (metric names and
log format). An import-linter contract keeps this folder at the bottom of the layers.
"""
