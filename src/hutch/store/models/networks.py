"""Private networks and their members."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hutch.store.models.base import Base, UtcDateTime, utcnow

__all__ = ["NetworkMember", "NetworkRecord"]


class NetworkRecord(Base):
    """A private network. ``subnet`` is unique across the whole store, so members of
    different networks never share an address (and a future overlay can span hosts)."""

    __tablename__ = "networks"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_networks_user_name"),
        UniqueConstraint("vni", name="uq_networks_vni"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    subnet: Mapped[str] = mapped_column(String(43), unique=True)
    vni: Mapped[int] = mapped_column(Integer)
    """Its VXLAN id when it spans hosts (2 … 2**24 - 1): drawn at random when the network
    is made, unique among the store's networks (the constraint decides a race), so no two
    networks ever share a segment between hosts."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NetworkMember(Base):
    """A sandbox attached to a network: its address there and its interface inside."""

    __tablename__ = "network_members"
    __table_args__ = (
        UniqueConstraint("network_id", "ip", name="uq_network_members_ip"),
        UniqueConstraint("sandbox_id", "ifname", name="uq_network_members_ifname"),
        Index("ix_network_members_sandbox", "sandbox_id"),
    )

    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    sandbox_id: Mapped[str] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    ip: Mapped[str] = mapped_column(String(45))
    ifname: Mapped[str] = mapped_column(String(15))
    attached_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
