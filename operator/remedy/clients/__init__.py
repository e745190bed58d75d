"""Clients for the systems remedy acts on, each behind a seam tests can swap."""
