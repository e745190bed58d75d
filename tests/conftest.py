"""Test session wiring: fixtures live in tests/fixtures/* as pytest plugins."""

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.services",
    "tests.fixtures.operator",
]
