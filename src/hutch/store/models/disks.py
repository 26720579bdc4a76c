"""Registered S3 disks and their attachments to sandboxes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from hutch.store.models.base import Base, UtcDateTime, utcnow

__all__ = ["DiskAttachment", "DiskRecord"]


class DiskRecord(Base):
    """A registered S3 bucket. ``credentials`` is sealed (:mod:`hutch.core.sealing`) with
    the row's id as context. Deleting sets ``deleted_at``; the row stays."""

    __tablename__ = "disks"
    __table_args__ = (
        Index(
            "uq_disks_live_name",
            "user_id",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    bucket: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(2048))
    region: Mapped[str] = mapped_column(String(64))
    use_path_style: Mapped[bool] = mapped_column(Boolean)
    credentials: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    def __repr__(self) -> str:  # the sealed credentials stay out of logs too
        return f"DiskRecord(id={self.id!r}, name={self.name!r}, bucket={self.bucket!r})"


class DiskAttachment(Base):
    """A disk mounted (or being mounted) at ``mount_path`` in a sandbox."""

    __tablename__ = "disk_attachments"
    __table_args__ = (
        UniqueConstraint("sandbox_id", "mount_path", name="uq_disk_attachments_path"),
        Index("ix_disk_attachments_disk", "disk_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id", ondelete="CASCADE"))
    disk_id: Mapped[str] = mapped_column(ForeignKey("disks.id", ondelete="CASCADE"))
    mount_path: Mapped[str] = mapped_column(String(4096))
    sub_path: Mapped[str] = mapped_column(String(4096))
    mount_status: Mapped[str] = mapped_column(String(16))
    mount_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
