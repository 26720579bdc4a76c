"""Templates and their build logs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hutch.store.models.base import Base, UtcDateTime, utcnow

__all__ = ["TemplateLogLine", "TemplateRecord"]


class TemplateRecord(Base):
    """A user's template: one version of one name, built from a Dockerfile (or imported).

    A name used again is a new row with the next ``version``; creates use the newest
    ``ready`` one. Rows are kept after delete (``deleted_at``) so sandboxes made from them
    keep their image. ``layers`` are the layer store's keys, bottom first, above ``root``
    (a catalog image name, or empty when the bottom layer is a whole root filesystem).
    """

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("user_id", "name", "version", name="uq_templates_user_name_version"),
        Index("ix_templates_user_name", "user_id", "name"),
        Index("ix_templates_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    base: Mapped[str] = mapped_column(String(256), default="")
    """What the Dockerfile's FROM names (a catalog image, a template, an OCI reference)."""
    dockerfile: Mapped[str] = mapped_column(Text, default="")
    root: Mapped[str] = mapped_column(String(512), default="")
    """The catalog image under the layers ('' when the bottom layer is a whole rootfs)."""
    layers: Mapped[list[str]] = mapped_column(JSON, default=list)
    start_cmd: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """CMD and ENTRYPOINT combined: the argv run when a sandbox starts from it."""
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    workdir: Mapped[str] = mapped_column(String(4096), default="/")
    run_as: Mapped[str] = mapped_column(String(256), default="")
    """The Dockerfile's USER: who exec and the start command run as ('' is root)."""
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    exposed: Mapped[list[str]] = mapped_column(JSON, default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    steps_cached: Mapped[int] = mapped_column(Integer, default=0)
    build_sandbox: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The build's sandbox while a step runs in one (destroyed at a restart if left)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    built_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TemplateLogLine(Base):
    """One line of a template build's log (``attempt`` counts from 1)."""

    __tablename__ = "template_log_lines"
    __table_args__ = (Index("ix_template_log_lines_template", "template_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    ts: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    line: Mapped[str] = mapped_column(Text, default="")
