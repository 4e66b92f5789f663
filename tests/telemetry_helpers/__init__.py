"""Helpers for the telemetry tests: certificates, and a publisher to run as a process."""
