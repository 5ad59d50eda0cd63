"""Tiny programs for the embedded default tree (daemon/default.toml), so a fresh install has a demo."""
