"""Reusable test fixtures (a metrics exporter, a real Prometheus)."""
