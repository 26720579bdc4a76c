"""The static catalog: sandbox shapes and root filesystem images.

Shapes come from configuration (``HUTCH_SHAPES``, a JSON list) with the defaults below.
Root filesystems are the images hutch knows how to build; which of them a host has
actually built is the host's business (``hutch.host.images``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_SHAPES", "DESKTOP_ROOTFS", "ROOTFS_CATALOG", "RootfsImage", "Shape"]


class Shape(BaseModel):
    """A resource shape a sandbox is created with."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    vcpu: int = Field(ge=1, le=256)
    mem_mib: int = Field(ge=64)
    default_disk_mib: int = Field(ge=64)


class RootfsImage(BaseModel):
    """A root filesystem image users can pick with ``rootfs``."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str


DEFAULT_SHAPES: tuple[Shape, ...] = (
    Shape(id="s-1vcpu-256mb", vcpu=1, mem_mib=256, default_disk_mib=10240),
    Shape(id="s-1vcpu-512mb", vcpu=1, mem_mib=512, default_disk_mib=10240),
    Shape(id="s-1vcpu-1gb", vcpu=1, mem_mib=1024, default_disk_mib=10240),
    Shape(id="s-2vcpu-2gb", vcpu=2, mem_mib=2048, default_disk_mib=20480),
    Shape(id="s-2vcpu-4gb", vcpu=2, mem_mib=4096, default_disk_mib=20480),
)

ROOTFS_CATALOG: tuple[RootfsImage, ...] = (
    RootfsImage(
        name="devbox:1",
        description=(
            "Debian 12 (bookworm) with bash, python3 (pip, venv), git, curl, "
            "ca-certificates, procps and iproute2"
        ),
    ),
    RootfsImage(
        name="node",
        description="devbox:1 plus Debian's Node.js and npm",
    ),
    RootfsImage(
        name="desktop:1",
        description=(
            "Debian 12 with a desktop for computer use (/v1/sandboxes/{id}/computer): Xvfb, "
            "openbox, Chromium, st and xterm, xdotool, wmctrl, xclip, x11vnc and noVNC"
        ),
    ),
)

DESKTOP_ROOTFS = "desktop:1"
"""The catalog image with a desktop (the computer-use routes answer 501 elsewhere)."""
