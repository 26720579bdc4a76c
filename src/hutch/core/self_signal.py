"""Self-signal: a sandbox asks, from inside, to be paused or deleted (CreateOS §16).

Inside, the guest agent serves ``POST 127.0.0.1:1029/self/pause|delete`` and the FIFO
``/run/self`` (:mod:`hutch.guest.selfsignal`). Here, one watcher per running sandbox holds
one quiet long poll on the agent's unix socket (``self_watch``) and, when the agent
answers, pauses or destroys that sandbox exactly as its owner's request would, keeping the
reason on the record. Nothing polls: an idle sandbox costs one open socket and one
sleeping task here, and one thread blocked in ``select`` in the agent.

A sandbox can signal only itself: the socket it is heard on is its own agent's.
Watchers start when a sandbox runs (starts, resumes, or is found running at a start) and
stop when it pauses, fails or is destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hutch.core.errors import HutchError
from hutch.core.sandboxes import SandboxService
from hutch.host.guest import GuestError, GuestUnreachable, SelfSignal
from hutch.store.models import SandboxRecord

__all__ = ["SelfSignals"]

log = logging.getLogger(__name__)

# Between a signal and the pause or destroy: answers already on their way out of the
# sandbox (the exec or process start that sent the signal, say) leave before it freezes.
SETTLE_S = 1.0
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
_DEFAULT_REASON = {
    "pause": "paused from inside the sandbox (self-signal)",
    "delete": "deleted from inside the sandbox (self-signal)",
}


class SelfSignals:
    """The watchers; register :meth:`watch` and :meth:`forget` as the sandbox service's
    running and stop listeners, and call :meth:`stop` at shutdown."""

    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._actions: set[asyncio.Task[None]] = set()

    async def watch(self, record: SandboxRecord) -> None:
        """Listen to ``record``'s sandbox (idempotent)."""
        current = self._watchers.get(record.id)
        if current is None or current.done():
            self._watchers[record.id] = asyncio.create_task(
                self._follow(record.id), name=f"hutch-self-signal-{record.id}"
            )

    async def forget(self, sandbox_id: str) -> None:
        """Stop listening to ``sandbox_id`` (it pauses, fails or is destroyed)."""
        task = self._watchers.pop(sandbox_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        for sandbox_id in list(self._watchers):
            await self.forget(sandbox_id)
        for action in list(self._actions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await action

    async def _follow(self, sandbox_id: str) -> None:
        guest = self._sandboxes.guest_of(sandbox_id)
        delay = RETRY_FIRST_S
        while True:
            try:
                signal = await guest.watch_self()
            except GuestUnreachable:
                # The agent is restarting, or the sandbox is stopping (then we are
                # cancelled): look again a little later.
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except GuestError as exc:
                log.warning("sandbox %s cannot relay self-signals: %s", sandbox_id, exc.message)
                return
            action = asyncio.create_task(self._act(sandbox_id, signal))
            self._actions.add(action)
            action.add_done_callback(self._actions.discard)
            return

    async def _act(self, sandbox_id: str, signal: SelfSignal) -> None:
        reason = signal.reason or _DEFAULT_REASON[signal.action]
        log.info("sandbox %s asks to be %sd: %s", sandbox_id, signal.action, reason)
        await asyncio.sleep(SETTLE_S)
        try:
            if signal.action == "pause":
                await self._sandboxes.pause_from_inside(sandbox_id, reason=reason)
            else:
                await self._sandboxes.destroy_from_inside(sandbox_id, reason=reason)
        except HutchError as exc:
            log.warning("sandbox %s: self-%s refused: %s", sandbox_id, signal.action, exc.message)
        except Exception:
            log.exception("sandbox %s: self-%s failed", sandbox_id, signal.action)
        # Still running (the request was refused): listen again.
        watcher = self._watchers.get(sandbox_id)
        if (
            watcher is not None
            and watcher.done()
            and await self._sandboxes.status_of(sandbox_id) == "running"
        ):
            self._watchers[sandbox_id] = asyncio.create_task(self._follow(sandbox_id))
