"""Reusable test fixtures (a metrics exporter, a real Prometheus) and helpers (tools, waiting)."""
