"""Build logs: lines written while a build runs, read (or followed) by the owner meanwhile.

Lines are rows of ``template_log_lines`` (so a follower in another request, or after a
restart, reads what was written), buffered briefly and written in batches.
"""

from __future__ import annotations

from hutch.store.db import Database
from hutch.store.models import TemplateLogLine, utcnow

__all__ = ["TAIL_LINES", "BuildLog"]

TAIL_LINES = 20
_MAX_LINE = 8192


class BuildLog:
    """The log of one attempt of one template's build."""

    def __init__(self, db: Database, template_id: str, attempt: int) -> None:
        self._db = db
        self.template_id = template_id
        self.attempt = attempt
        self._buffer: list[TemplateLogLine] = []
        self._partial = ""
        self.tail: list[str] = []
        """The last lines of the current step's output (for the failure reason)."""

    def add(self, line: str, *, level: str = "info") -> None:
        self._buffer.append(
            TemplateLogLine(
                template_id=self.template_id,
                attempt=self.attempt,
                ts=utcnow(),
                level=level,
                line=line[:_MAX_LINE],
            )
        )

    def output(self, data: bytes) -> None:
        """A step's output as it comes: whole lines are logged, the rest waits."""
        text = self._partial + data.decode("utf-8", errors="replace")
        *lines, self._partial = text.replace("\r\n", "\n").split("\n")
        for line in lines:
            self._output_line(line)

    def end_output(self) -> None:
        if self._partial:
            self._output_line(self._partial)
            self._partial = ""

    def _output_line(self, line: str) -> None:
        line = line.rsplit("\r", 1)[-1]  # a progress bar's last state
        self.tail = [*self.tail[-(TAIL_LINES - 1) :], line]
        self.add(line)

    async def write(self, line: str, *, level: str = "info") -> None:
        self.add(line, level=level)
        await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        async with self._db.sessions.begin() as session:
            session.add_all(batch)
