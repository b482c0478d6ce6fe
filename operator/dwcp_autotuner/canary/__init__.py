"""The canary protocol between the operator and the components (see `protocol.py`)."""
