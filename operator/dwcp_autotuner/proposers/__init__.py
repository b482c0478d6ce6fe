"""Proposers: one class per proposal strategy behind the interface in `base.py`, and their model storage."""
