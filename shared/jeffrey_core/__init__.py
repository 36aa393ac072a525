"""Code shared by the Jeffrey OS services: settings, task contract, store, Redis and metrics helpers."""

__version__ = "0.1.0"
