"""The udev rules, as package data for ``bodycam install``."""
