"""OCI image references (``registry/repo:tag``) and the operator's registry allowlist.

A reference is read the way Docker reads one: the first path component is a registry only
when it has a ``.`` or a ``:`` or is ``localhost``; otherwise the image is on Docker Hub
(``docker.io``, and a one-component name is ``library/<name>``). The tag defaults to
``latest``; a ``@sha256:…`` digest pins the content.

The allowlist (``HUTCH_TEMPLATE_REGISTRIES``) is comma-separated entries of the form
``[http://]host[:port][/path-prefix]``. A reference is allowed when its registry is an
entry's (host compared without case) and its repository is the entry's prefix or lies
under it. ``http://`` marks a registry spoken to over plain HTTP (a mirror on loopback or
a private network); every other entry is HTTPS with certificate checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hutch.core.errors import InvalidInput

__all__ = [
    "AllowedRegistry",
    "ImageReference",
    "RegistryNotAllowed",
    "check_allowed",
    "parse_allowed_registries",
    "parse_reference",
]

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(
    r"^(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


class RegistryNotAllowed(InvalidInput):
    """The image's registry is not on the operator's allowlist."""

    default_code = "registry_not_allowed"


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    """A parsed image reference: ``registry/repository:tag`` or ``…@digest``."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def canonical(self) -> str:
        """``registry/repository:tag`` (and ``@digest`` when pinned), registry always named."""
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def transport(self) -> str:
        """The reference as skopeo's ``docker://`` transport takes it."""
        return f"docker://{self.canonical}"

    def __str__(self) -> str:
        return self.canonical


@dataclass(frozen=True, kw_only=True)
class AllowedRegistry:
    """One allowlist entry."""

    registry: str
    prefix: str = ""
    plain_http: bool = False

    def admits(self, reference: ImageReference) -> bool:
        if self.registry.lower() != reference.registry.lower():
            return False
        return not self.prefix or (
            reference.repository == self.prefix
            or reference.repository.startswith(self.prefix + "/")
        )

    def __str__(self) -> str:
        text = f"{self.registry}/{self.prefix}" if self.prefix else self.registry
        return f"http://{text}" if self.plain_http else text


def parse_reference(text: str) -> ImageReference:
    """Parse ``[docker://]registry/repo[:tag][@sha256:…]``; InvalidInput says what is wrong."""
    raw = text.strip()
    if raw.startswith("docker://"):
        raw = raw[len("docker://") :]
    elif "://" in raw or raw.split(":", 1)[0] in {"oci", "docker-archive", "oci-archive", "dir"}:
        raise InvalidInput(
            f"{text!r}: only registry images are supported (docker://registry/repo:tag)",
            field="image",
        )
    if not raw:
        raise InvalidInput("the image reference is empty", field="image")
    name, _, digest = raw.partition("@")
    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry.lower() in _HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _HOST.match(registry):
        raise InvalidInput(f"{text!r}: {registry!r} is not a registry host[:port]", field="image")
    if not _REPOSITORY.match(repository):
        raise InvalidInput(
            f"{text!r}: the repository must be lower-case letters, digits and . _ - separated by /",
            field="image",
        )
    if tag is not None and not _TAG.match(tag):
        raise InvalidInput(f"{text!r}: {tag!r} is not a valid tag", field="image")
    if digest and not _DIGEST.match(digest):
        raise InvalidInput(f"{text!r}: the digest must be sha256:<64 hex digits>", field="image")
    if tag is None and not digest:
        tag = "latest"
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest or None)


def parse_allowed_registries(text: str) -> tuple[AllowedRegistry, ...]:
    """The allowlist setting parsed; ValueError names a malformed entry."""
    entries = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            continue
        plain_http = entry.startswith("http://")
        body = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
        registry, _, prefix = body.partition("/")
        if registry.lower() in _HUB_ALIASES:
            registry = DOCKER_HUB
        if not _HOST.match(registry) or (prefix and not _REPOSITORY.match(prefix)):
            raise ValueError(
                f"template_registries: {entry!r} is not [http://]host[:port][/path-prefix]"
            )
        entries.append(AllowedRegistry(registry=registry, prefix=prefix, plain_http=plain_http))
    return tuple(entries)


def check_allowed(
    reference: ImageReference, allowed: tuple[AllowedRegistry, ...], *, field: str | None = None
) -> AllowedRegistry:
    """The allowlist entry that admits ``reference``; :class:`RegistryNotAllowed` if none."""
    for entry in allowed:
        if entry.admits(reference):
            return entry
    if not allowed:
        message = (
            f"registry {reference.registry!r} is not allowed: this hutch pulls from no "
            "registry (the operator lists them in HUTCH_TEMPLATE_REGISTRIES)"
        )
    else:
        names = ", ".join(str(entry) for entry in allowed)
        message = (
            f"{reference.registry}/{reference.repository} is not from an allowed registry; "
            f"allowed: {names} (HUTCH_TEMPLATE_REGISTRIES)"
        )
    raise RegistryNotAllowed(message, field=field)
