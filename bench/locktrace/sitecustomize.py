"""SQLite write-lock tracing for benchmarks (``bench/load.py --trace-locks``); never loaded
by hutch itself.

Put this directory first on a server's PYTHONPATH with ``BENCH_LOCKTRACE_DIR`` set: every
process then appends one JSON line per write transaction to ``locks-<pid>.jsonl`` there:
how long its first write statement took (``wait_ms``: SQLite's busy wait for the write
lock is in it), how long the lock was held after (``held_ms``: from that statement's end
to the commit's or rollback's end), its statements, its thread and the hutch code that
made it (for the async session, the coroutine's frames behind SQLAlchemy's greenlet).
:func:`summary` adds them up by origin.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

_DIR = os.environ.get("BENCH_LOCKTRACE_DIR")
_WRITES = ("INSERT", "UPDATE", "DELETE")


def _origin() -> str:
    frames = traceback.extract_stack()[:-3]
    try:
        import greenlet

        parent = greenlet.getcurrent().parent
        if parent is not None and parent.gr_frame is not None:
            frames = traceback.extract_stack(parent.gr_frame) + frames
    except ImportError:
        pass
    names = [
        f"{frame.filename.split('/hutch/')[-1]}:{frame.lineno}:{frame.name}"
        for frame in reversed(frames)
        if "/hutch/" in frame.filename
        and "/store/db.py" not in frame.filename
        and "sqlalchemy" not in frame.filename
    ]
    return " < ".join(names[:3]) or "?"


def _install(directory: str) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Connection, Engine

    lock = threading.Lock()

    def write(record: dict[str, Any]) -> None:
        with lock, open(Path(directory) / f"locks-{os.getpid()}.jsonl", "a") as out:
            out.write(json.dumps(record) + "\n")

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["_locktrace_t0"] = time.monotonic()

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() not in _WRITES:
            return
        now = time.monotonic()
        state = conn.info.get("_locktrace")
        if state is None:
            conn.info["_locktrace"] = state = {
                "since": now,
                "wait_ms": round((now - conn.info.get("_locktrace_t0", now)) * 1000, 2),
                "statements": 0,
                "origin": _origin(),
                "thread": threading.current_thread().name,
                "first": statement.strip()[:60],
            }
        state["statements"] += 1

    def ended(conn: Any, how: str) -> None:
        state = conn.info.pop("_locktrace", None)
        if state is not None:
            since = state.pop("since")
            write({**state, "held_ms": round((time.monotonic() - since) * 1000, 2),
                   "end": how, "pid": os.getpid()})  # fmt: skip

    commit, rollback = Connection._commit_impl, Connection._rollback_impl

    def traced_commit(self: Any) -> None:
        try:
            commit(self)
        finally:
            ended(self, "commit")

    def traced_rollback(self: Any) -> None:
        try:
            rollback(self)
        finally:
            ended(self, "rollback")

    Connection._commit_impl = traced_commit  # type: ignore[method-assign]
    Connection._rollback_impl = traced_rollback  # type: ignore[method-assign]


def summary(directory: Path, top: int = 8) -> dict[str, Any]:
    """The traced transactions added up by origin (the longest holders of the lock first)."""
    rows = [json.loads(line) for path in directory.glob("locks-*.jsonl") for line in path.open()]
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        thread = "writer" if row["thread"].startswith("hutch-store-writer") else row["thread"]
        by.setdefault(f"{row['origin']} [{thread}]", []).append(row)
    origins = sorted(by.items(), key=lambda item: -sum(r["held_ms"] for r in item[1]))
    writer = [r for r in rows if r["thread"].startswith("hutch-store-writer")]
    return {
        "transactions": len(rows),
        "held_s": round(sum(r["held_ms"] for r in rows) / 1000, 2),
        "writer_thread_wait_s": round(sum(r["wait_ms"] for r in writer) / 1000, 2),
        "async_session_held_s": round(
            sum(r["held_ms"] for r in rows if r["thread"] == "MainThread") / 1000, 2
        ),
        "by_origin": [
            {
                "origin": origin,
                "count": len(group),
                "held_s": round(sum(r["held_ms"] for r in group) / 1000, 2),
                "held_p50_ms": sorted(r["held_ms"] for r in group)[len(group) // 2],
                "wait_s": round(sum(r["wait_ms"] for r in group) / 1000, 2),
            }
            for origin, group in origins[:top]
        ],
    }


if _DIR:
    _install(_DIR)
