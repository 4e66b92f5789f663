"""The systemd units, as package data for ``bodycam install``."""
