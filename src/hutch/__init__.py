"""hutch: a self-hosted sandbox cloud."""

__version__ = "0.1.0"
