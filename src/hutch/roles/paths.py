"""Where a home's agent listens and what it leaves for the others (no heavy imports: the
supervisor reads these)."""

from __future__ import annotations

from pathlib import Path

from hutch.settings import Settings

__all__ = ["agent_info_path", "agent_socket", "run_dir"]


def run_dir(settings: Settings) -> Path:
    """``$HUTCH_HOME/run``, 0700: the agent's socket, lock and info file."""
    return settings.home / "run"


def agent_socket(settings: Settings) -> Path:
    """Where the agent of this home listens (HTTP/1.1 on a unix socket)."""
    return run_dir(settings) / "agent.sock"


def agent_info_path(settings: Settings) -> Path:
    """What the running agent tells the others without being asked (JSON: pid, proxy port)."""
    return run_dir(settings) / "agent.json"
