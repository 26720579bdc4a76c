"""Running host commands (runc, ip, mount, …) without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CommandFailed", "CommandResult", "run"]

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class CommandFailed(Exception):
    def __init__(self, argv: tuple[str, ...], result: CommandResult) -> None:
        self.argv = argv
        self.result = result
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        super().__init__(f"{argv[0]} {' '.join(argv[1:3])} failed ({result.returncode}): {detail}")

    @property
    def detail(self) -> str:
        return (self.result.stderr or self.result.stdout).decode(errors="replace").strip()


async def run(
    *argv: str,
    input: bytes | None = None,
    check: bool = True,
    timeout_s: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> CommandResult:
    """Run ``argv``; raise :class:`CommandFailed` on a non-zero exit when ``check``.

    The system directories are searched too, so a PATH without ``/usr/sbin`` (cron, a
    service manager, ``sudo -E``) still finds ``sysctl``, ``nft``, ``losetup`` and the rest.
    """
    program = shutil.which(argv[0], path=_SEARCH_PATH) or argv[0]
    proc = await asyncio.create_subprocess_exec(
        program,
        *argv[1:],
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await proc.communicate(input)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(argv, CommandResult(-9, b"", b"timed out")) from None
    result = CommandResult(proc.returncode or 0, stdout, stderr)
    if check and result.returncode != 0:
        raise CommandFailed(argv, result)
    return result
