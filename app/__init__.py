"""Quarry's front doors: settings, resource wiring, the CLI (and the HTTP API)."""
