"""Sandbox exec and files: commands run and files moved through the guest agent."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

from hutch.core.errors import (
    Conflict,
    HutchError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.sandbox_base import SandboxBase
from hutch.core.sandbox_requests import (
    MAX_PATH,
    ExecCommand,
    ExecResult,
    Spawned,
    check_env,
)
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.host.guest import (
    ExecExit,
    ExecOutput,
    ExecRequest,
    FileDownload,
    GuestClient,
    GuestError,
    GuestUnreachable,
)
from hutch.store.models import SandboxRecord

__all__ = ["SandboxExec"]


class SandboxExec(SandboxBase):
    """Exec and files of running sandboxes; each use counts as activity for auto-pause."""

    async def _running(self, user: Principal, ident: str) -> SandboxRecord:
        # Kept until anyone writes to the store, so a pause or destroy is seen at once.
        token = self._running_records.token()
        record = self._running_records.get((user.user_id, ident), token)
        if record is None:
            record = await self.get(user, ident)
            self._running_records.put((user.user_id, ident), token, record)
        if record.status == S.PAUSED and (woken := await self._auto_resume(user, record)):
            record = woken
        if record.status == S.PAUSED:
            raise Conflict(
                f"sandbox {record.name} is paused; resume it first "
                f"(POST /v1/sandboxes/{record.id}/resume)",
                field="status",
            )
        if record.status != S.RUNNING:
            raise Conflict(f"sandbox is {record.status}, not running", field="status")
        self._touch(record.id)
        return record

    def _exec_request(self, command: ExecCommand) -> ExecRequest:
        if not command.cmd:
            raise InvalidInput("cmd must not be empty", field="cmd")
        timeout = command.timeout_s or self._settings.exec_default_timeout_s
        if not 0 < timeout <= self._settings.exec_max_timeout_s:
            raise InvalidInput(
                f"timeout_secs must be between 0 and {self._settings.exec_max_timeout_s:g}",
                field="timeout_secs",
            )
        if command.cwd is not None:
            _check_path(command.cwd, field="cwd")
        check_env(command.env, field="env")
        for name, values in (("cmd", [command.cmd]), ("args", command.args or ())):
            if any("\0" in value for value in values):  # (no program can be given one)
                raise InvalidInput(f"{name} must not contain a NUL byte", field=name)
        return ExecRequest(
            argv=command.argv,
            env=dict(command.env),
            cwd=command.cwd,
            timeout_s=timeout,
            stdin=command.stdin,
        )

    async def exec_stream(
        self, user: Principal, ident: str, command: ExecCommand
    ) -> AsyncIterator[ExecOutput | ExecExit]:
        """Check everything, then return the command's events (output, then one exit)."""
        request = self._exec_request(command)
        record = await self._running(user, ident)
        request = _forked_env(record, request)
        return self._guarded(record.id, self._host.driver.guest(record.id).exec(request))

    async def _guarded(
        self, sandbox_id: str, events: AsyncIterator[ExecOutput | ExecExit]
    ) -> AsyncIterator[ExecOutput | ExecExit]:
        try:
            async for event in events:
                yield event
        except GuestUnreachable as exc:
            raise _unreachable() from exc
        except GuestError as exc:
            raise Unavailable(f"the sandbox refused the command: {exc.message}") from exc
        finally:
            self._touch(sandbox_id)

    async def spawn(self, user: Principal, ident: str, command: ExecCommand) -> Spawned:
        """Start a command in the background; it keeps running after this returns."""
        request = self._exec_request(command)
        record = await self._running(user, ident)
        request = _forked_env(record, request)
        handle = new_id("proc_", lower=True)
        log_path = f"/tmp/{handle}.log"
        try:
            pid = await self._host.driver.guest(record.id).spawn(request, log=log_path)
        except GuestUnreachable as exc:
            raise _unreachable() from exc
        except GuestError as exc:
            raise InvalidInput(exc.message, field="command") from exc
        return Spawned(id=handle, pid=pid, log_path=log_path)

    async def guest(self, user: Principal, ident: str) -> GuestClient:
        """The guest agent of the user's running sandbox (for :mod:`hutch.core.processes`)."""
        record = await self._running(user, ident)
        return self._host.driver.guest(record.id)

    async def running_guest(self, user: Principal, ident: str) -> tuple[SandboxRecord, GuestClient]:
        """The user's running sandbox and its guest agent (for :mod:`hutch.core.computer`);
        counts as activity, as exec does."""
        record = await self._running(user, ident)
        return record, self._host.driver.guest(record.id)

    def guest_of(self, sandbox_id: str) -> GuestClient:
        """The guest agent of a sandbox on this host by id, unchecked: for the control
        plane's own watchers (:mod:`hutch.core.self_signal`), never for a request."""
        return self._host.driver.guest(sandbox_id)

    async def status_of(self, sandbox_id: str) -> str | None:
        """A sandbox's status by id, unchecked (None if there is no such sandbox)."""
        try:
            return str((await self._load(sandbox_id)).status)
        except NotFound:
            return None

    def check_command(self, command: ExecCommand) -> ExecRequest:
        """``command`` checked as exec checks it (argv, env, cwd), as the agent's request."""
        return self._exec_request(command)

    async def exec(self, user: Principal, ident: str, command: ExecCommand) -> ExecResult:
        """Run a command to completion; each output stream is kept up to the configured cap."""
        started = time.monotonic()
        cap = self._settings.exec_output_cap_bytes
        buffers = {"stdout": bytearray(), "stderr": bytearray()}
        dropped = {"stdout": 0, "stderr": 0}
        done = ExecExit(None, "the command ended without an exit status")
        async for event in await self.exec_stream(user, ident, command):
            if isinstance(event, ExecOutput):
                buffer = buffers[event.stream]
                room = cap - len(buffer)
                buffer.extend(event.data[: max(room, 0)])
                dropped[event.stream] += max(len(event.data) - max(room, 0), 0)
            else:
                done = event
        texts = {}
        for stream, buffer in buffers.items():
            text = buffer.decode("utf-8", errors="replace")
            if dropped[stream]:
                text += (
                    f"\n[hutch: {stream} truncated: {dropped[stream]} more bytes over the "
                    f"{cap}-byte cap; use ?stream=true for everything]"
                )
            texts[stream] = text
        return ExecResult(
            stdout=texts["stdout"],
            stderr=texts["stderr"],
            exit_code=done.exit_code,
            error=done.error,
            exec_ms=round((time.monotonic() - started) * 1000),
        )

    async def write_file(
        self,
        user: Principal,
        ident: str,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None = None,
    ) -> int:
        """Write ``chunks`` to ``path`` (parents are made) and return the bytes written.

        A file over ``files_max_bytes`` is :class:`PayloadTooLarge`: refused before any
        byte moves when ``size`` (the declared length) says so, else when the count passes
        the cap, and then the upload is cut off and the old file (or none) stays."""
        _check_path(path, field="path")
        cap = self._settings.files_max_bytes
        if size is not None and size > cap:
            raise _too_large(cap)
        record = await self._running(user, ident)
        try:
            return await self._host.driver.guest(record.id).write_file(path, _capped(chunks, cap))
        except GuestError as exc:
            raise _file_error(exc) from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc

    async def read_file(self, user: Principal, ident: str, path: str) -> FileDownload:
        _check_path(path, field="path")
        record = await self._running(user, ident)
        try:
            return await self._host.driver.guest(record.id).read_file(path)
        except GuestError as exc:
            raise _file_error(exc) from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc


def _unreachable() -> HutchError:
    return Conflict(
        "the sandbox is not answering; it may have stopped. Check its status, and delete "
        "it if it is in error",
        field="status",
    )


async def _capped(chunks: AsyncIterator[bytes], cap: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > cap:
            raise _too_large(cap)
        yield chunk


def _too_large(cap: int) -> HutchError:
    return PayloadTooLarge(
        f"a file is at most {cap} bytes ({cap / 2**20:g} MiB); send a larger one in parts "
        "(split, upload, then cat them together with exec)",
        field="body",
    )


def _check_path(path: str, *, field: str) -> None:
    if not path.startswith("/"):
        raise InvalidInput(f"{field} must be an absolute path (start with '/')", field=field)
    if any(part == ".." for part in path.split("/")):
        raise InvalidInput(f"{field} must not contain '..'", field=field)
    if "\0" in path or len(path) > MAX_PATH:
        raise InvalidInput(f"{field} is not a usable path", field=field)


def _file_error(exc: GuestError) -> HutchError:
    if exc.code == "not_found":
        return NotFound(exc.message, field="path")
    return InvalidInput(exc.message, field="path")


def _forked_env(record: SandboxRecord, request: ExecRequest) -> ExecRequest:
    """A child forked with its processes (gvisor) has its source's agent, started with the
    source's environment: its own ``envs`` are given with each command instead."""
    if record.fork_mode != "processes":
        return request
    return dataclasses.replace(request, env={**record.envs, **request.env})
