"""An image's config: how its programs run (the OCI image config's Env, WorkingDir, User,
Entrypoint, Cmd, ExposedPorts, Labels), kept beside its root filesystem.

Any image build may carry one as ``<build>/image.json`` (``<build>/rootfs`` beside it):
imported registry images do (:mod:`hutch.host.oci_import`), templates and snapshots can;
the catalog images do not. The runc driver gives a sandbox the image's ``Env`` (under the
sandbox's own variables); a template built from the image starts from all of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hutch.host.images import image_dir

__all__ = ["IMAGE_CONFIG_FILE", "ImageConfig", "image_config", "write_image_config"]

IMAGE_CONFIG_FILE = "image.json"


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """What an image says about how its programs run (the OCI image config). A template
    built from the image starts from these; a sandbox from it gets ``env``."""

    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def start_command(self) -> tuple[str, ...]:
        """Entrypoint followed by Cmd, as a container runtime runs them (empty: none)."""
        return (*self.entrypoint, *self.cmd)

    def to_json(self) -> dict[str, Any]:
        return {
            "Env": [f"{key}={value}" for key, value in self.env.items()],
            "WorkingDir": self.working_dir,
            "User": self.user,
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "ExposedPorts": {port: {} for port in self.exposed_ports},
            "Labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ImageConfig:
        """From an OCI image config's ``config`` object (missing keys are empty)."""
        data = data or {}
        env: dict[str, str] = {}
        for item in data.get("Env") or []:
            key, _, value = str(item).partition("=")
            if key:
                env[key] = value
        return cls(
            env=env,
            working_dir=str(data.get("WorkingDir") or ""),
            user=str(data.get("User") or ""),
            entrypoint=tuple(str(a) for a in data.get("Entrypoint") or ()),
            cmd=tuple(str(a) for a in data.get("Cmd") or ()),
            exposed_ports=tuple(sorted(str(p) for p in data.get("ExposedPorts") or {})),
            labels={str(k): str(v) for k, v in (data.get("Labels") or {}).items()},
        )


def write_image_config(build: Path, config: ImageConfig) -> None:
    """Record ``config`` beside ``build/rootfs`` (any image build may carry one)."""
    (build / IMAGE_CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=1))


def image_config(images: Path, name: str) -> ImageConfig | None:
    """The config recorded with the current build of image ``name``; None if it has none
    (the catalog images) or is not built."""
    path = image_dir(images, name) / "current" / IMAGE_CONFIG_FILE
    try:
        return ImageConfig.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
