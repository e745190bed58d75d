"""Test package (so fixtures import as tests.fixtures.*)."""
