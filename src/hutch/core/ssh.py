"""SSH into sandboxes: root's authorized keys, and an sshd started when it is first needed.

A sandbox's keys (``ssh_pubkeys``, given at create or added later) are written into
``/root/.ssh/authorized_keys`` (directory 0700, file 0600) whenever the sandbox starts or
resumes, and at once when keys are added to a running one. Lines already in the file stay
(a key the user added by hand is never lost); a key already there is not added again.

No sshd runs until someone connects to port 22 (a tunnel, ``hutch ssh``): then hutch makes
the sandbox's host keys if it has none yet (each sandbox its own, made inside it; the
images carry none) and starts ``sshd`` with password and keyboard-interactive logins off
and root allowed by key only. It keeps running from then on, as any daemon the user
started would.

With a driver that does not isolate (the fake driver of the tests, whose commands run on
the host itself) keys are kept but written nowhere and sshd is never started.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from hutch.core.errors import Conflict, InvalidInput, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sandboxes import SandboxService
from hutch.core.sshkeys import merge_keys, normalise_key
from hutch.host.agent import HostAgent
from hutch.host.guest import ExecExit, ExecOutput, ExecRequest, GuestError, GuestUnreachable
from hutch.store.db import Database
from hutch.store.models import SandboxRecord

__all__ = ["SSHD_OPTIONS", "SSH_PORT", "SshService"]

log = logging.getLogger(__name__)

SSH_PORT = 22
SSHD_OPTIONS = (
    "PasswordAuthentication=no",
    "KbdInteractiveAuthentication=no",
    "PermitRootLogin=prohibit-password",
)
NO_SSHD = 3
_STEP_TIMEOUT_S = 60.0

# Keys arrive on stdin, one a line; each is appended unless its key data is already there.
_INSTALL_KEYS = r"""
set -e
umask 077
mkdir -p /root/.ssh
chmod 700 /root/.ssh
file=/root/.ssh/authorized_keys
touch "$file"
chmod 600 "$file"
while read -r kind blob rest; do
  [ -n "$blob" ] || continue
  grep -qF -- " $blob" "$file" || printf '%s\n' "$kind $blob${rest:+ $rest}" >> "$file"
done
"""

_START_SSHD = rf"""
[ -x /usr/sbin/sshd ] || {{ echo "this sandbox's image has no sshd" >&2; exit {NO_SSHD}; }}
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
chmod 755 /run/sshd
# Not exec'd: with the agent (PID 1) as its parent and a session of its own, sshd would
# think itself daemonized already and stay in the foreground.
/usr/sbin/sshd -E /var/log/sshd.log {" ".join("-o " + option for option in SSHD_OPTIONS)}
"""


class SshService:
    def __init__(self, db: Database, sandboxes: SandboxService, host: HostAgent) -> None:
        self._db = db
        self._sandboxes = sandboxes
        self._host = host
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def _isolated(self) -> bool:
        return self._host.driver.capabilities.isolated

    async def add_keys(self, user: Principal, ident: str, keys: Sequence[str]) -> int:
        """Add ``keys`` to the sandbox (and to a running one's authorized_keys at once);
        the number of keys it has now. A bad key is a 400 naming its index."""
        if not keys:
            raise InvalidInput("give at least one key", field="keys")
        added = [normalise_key(key, field=f"keys.{index}") for index, key in enumerate(keys)]
        record = await self._sandboxes.get(user, ident)
        if record.status in (S.DESTROYING, S.DESTROYED, S.FAILED):
            raise Conflict(f"sandbox is {record.status}; it takes no keys", field="status")
        async with self._locks[record.id]:
            async with self._db.sessions.begin() as session:
                row = await session.get(SandboxRecord, record.id, with_for_update=True)
                assert row is not None
                row.ssh_pubkeys = merge_keys(row.ssh_pubkeys or [], added, field="keys")
                total = len(row.ssh_pubkeys)
            if row.status == S.RUNNING:
                await self._write_keys(row.id, row.ssh_pubkeys)
        return total

    async def install_keys(self, record: SandboxRecord) -> None:
        """Put the sandbox's keys into its authorized_keys (a running listener)."""
        if record.status == S.RUNNING and record.ssh_pubkeys:
            async with self._locks[record.id]:
                await self._write_keys(record.id, record.ssh_pubkeys)

    async def _write_keys(self, sandbox_id: str, keys: Sequence[str]) -> None:
        if not self._isolated:
            return  # the fake driver's commands run on the host itself: never touch its root
        stdin = "".join(key + "\n" for key in keys).encode()
        code, said = await self._run(sandbox_id, _INSTALL_KEYS, stdin=stdin)
        if code != 0:
            raise Unavailable(f"the keys could not be written into the sandbox: {said}")

    async def start_sshd(self, sandbox_id: str) -> None:
        """Start sshd in the running sandbox (host keys made first if missing).

        :class:`Conflict` when its image has no sshd; :class:`Unavailable` if it fails.
        """
        if not self._isolated:
            raise Conflict(
                f"nothing listens on port {SSH_PORT}, and hutch starts sshd only in isolated "
                f"sandboxes (this host's driver is {self._host.driver.capabilities.name})",
                field="port",
            )
        async with self._locks[sandbox_id]:
            code, said = await self._run(sandbox_id, _START_SSHD)
        if code == NO_SSHD:
            raise Conflict(
                "nothing listens on port 22 and this sandbox's image has no sshd "
                "(install openssh-server in it, or use an image that has it)",
                field="port",
            )
        if code != 0:
            raise Unavailable(f"sshd could not be started in the sandbox: {said}")
        log.info("started sshd in %s", sandbox_id)

    async def _run(
        self, sandbox_id: str, script: str, *, stdin: bytes | None = None
    ) -> tuple[int | None, str]:
        """Run ``script`` as root in the sandbox: its exit code and what it said on stderr."""
        request = ExecRequest(
            argv=["/bin/sh", "-c", script], stdin=stdin, timeout_s=_STEP_TIMEOUT_S
        )
        said = bytearray()
        code: int | None = None
        try:
            async for event in self._host.driver.guest(sandbox_id).exec(request):
                if isinstance(event, ExecOutput) and event.stream == "stderr":
                    said += event.data[: 4096 - len(said)]
                elif isinstance(event, ExecExit):
                    code = event.exit_code
                    if event.error:
                        said += event.error.encode()
        except (GuestUnreachable, GuestError) as exc:
            raise Unavailable(f"the sandbox's agent does not answer: {exc}") from exc
        return code, said.decode(errors="replace").strip()
