"""The agent's local HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/count``."""
