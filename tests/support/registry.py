"""A real OCI registry on loopback (Debian's ``docker-registry``), and images to push to it.

The images are OCI layouts made with ``umoci`` (Debian) and pushed with ``skopeo``: a
base layer holding the whole ``devbox:1`` root filesystem (the guest agent needs its
Python), and derived tags with a layer of their own (files added, files deleted through a
whiteout, a config with Env, WorkingDir, User and Cmd).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["OciRegistry", "derive_image", "devbox_layout"]

_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OciRegistry:
    """``docker-registry serve`` on 127.0.0.1, plain HTTP, no auth, storage in ``directory``."""

    def __init__(self, directory: Path, *, users: Mapping[str, str] | None = None) -> None:
        """``users`` (name → password): basic auth (htpasswd, bcrypt) for every request."""
        self.directory = directory
        self.users = dict(users or {})
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OciRegistry:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.directory / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: '{self.host}'}}\n"
        )
        if self.users:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(f"{user}:{_bcrypt(password)}\n"
                                        for user, password in self.users.items()))  # fmt: skip
            with config.open("a") as text:
                text.write(f"auth: {{htpasswd: {{realm: hutch-tests, path: {htpasswd}}}}}\n")
        log = open(self.directory / "registry.log", "wb")  # noqa: SIM115 (the child keeps it)
        self._proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                output = (self.directory / "registry.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"docker-registry did not start: {output[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def copy_from(self, source: str, repository: str, *, creds: str | None = None) -> str:
        """Copy image ``source`` (in another plain-HTTP test registry) into this one as
        ``repository``, with ``creds`` (``user:password``) for this one."""
        policy = self.directory / "policy.json"
        policy.write_text(_POLICY)
        destination = f"{self.host}/{repository}"
        subprocess.run(
            ["skopeo", "--policy", str(policy), "copy", "--quiet", "--src-tls-verify=false",
             "--dest-tls-verify=false", *(["--dest-creds", creds] if creds else []),
             f"docker://{source}", f"docker://{destination}"],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
        )  # fmt: skip
        return destination

    def push(self, layout: Path, tag: str, repository: str) -> str:
        """Push ``layout:tag`` as ``<this registry>/<repository>``; return that reference."""
        policy = self.directory / "policy.json"
        policy.write_text(_POLICY)
        destination = f"{self.host}/{repository}"
        subprocess.run(
            ["skopeo", "--policy", str(policy), "copy", "--quiet", "--dest-tls-verify=false",
             f"oci:{layout}:{tag}", f"docker://{destination}"],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
        )  # fmt: skip
        return destination


def _bcrypt(password: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the C library's bcrypt; docker-registry's htpasswd wants bcrypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


def _umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, stdin=subprocess.DEVNULL, capture_output=True,
                   timeout=300)  # fmt: skip


def devbox_layout(images: Path, layout: Path) -> Path:
    """An OCI layout at ``layout`` whose tag ``devbox`` is one layer: the devbox:1 rootfs."""
    rootfs = images / "devbox_1" / "current" / "rootfs"
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", f"{layout}:devbox")
    _umoci("insert", "--image", f"{layout}:devbox", str(rootfs), "/")
    return layout


def derive_image(
    layout: Path,
    *,
    base: str,
    tag: str,
    work: Path,
    files: Mapping[str, str] = {},
    whiteouts: Sequence[str] = (),
    config: Sequence[str] = (),
) -> None:
    """Tag ``tag``: ``base`` plus a layer with ``files`` (path → text) and a whiteout
    layer deleting ``whiteouts``, then ``umoci config`` options (``--config.env=A=b``…)."""
    _umoci("config", "--image", f"{layout}:{base}", "--tag", tag, *config)
    if files:
        staging = work / f"layer-{tag}"
        for path, text in files.items():
            target = staging / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        _umoci("insert", "--image", f"{layout}:{tag}", str(staging), "/")
    for path in whiteouts:
        _umoci("insert", "--image", f"{layout}:{tag}", "--whiteout", path)
