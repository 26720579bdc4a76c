"""The package registries of the tests' small internet, and the packages they serve.

- PyPI: a real ``pypiserver`` (pinned in the dev dependencies) serving two wheels made
  here: ``hutch-hello`` 1.0.0, which depends on ``hutch-dep`` 1.0.0. Its fallback to the
  real PyPI is off.
- npm: a real ``verdaccio`` (pinned in tests/registry, installed by ``make test``) with no
  uplink, so it serves only what was published to it: ``hutch-hello`` 1.0.0, which depends
  on ``hutch-dep`` ^1.0.0, published through its HTTP API the way ``npm publish`` does.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "NPM_PACKAGES",
    "VERDACCIO",
    "build_wheels",
    "publish_npm",
    "verdaccio_config",
]

VERDACCIO = Path(__file__).resolve().parents[1] / "registry" / "node_modules" / ".bin" / "verdaccio"

NPM_PACKAGES: dict[str, dict[str, Any]] = {
    "hutch-dep": {
        "dependencies": {},
        "index.js": "module.exports = () => 'hutch-dep says hi';\n",
    },
    "hutch-hello": {
        "dependencies": {"hutch-dep": "^1.0.0"},
        "index.js": "const dep = require('hutch-dep');\n"
        "module.exports = () => 'hutch-hello and ' + dep();\n",
    },
}


def _wheel(directory: Path, name: str, module: str, requires: list[str]) -> Path:
    dist = name.replace("-", "_")
    info = f"{dist}-1.0.0.dist-info"
    files = {
        f"{dist}.py": module,
        f"{info}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: 1.0.0\n"
        + "".join(f"Requires-Dist: {requirement}\n" for requirement in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hutch-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{dist}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def build_wheels(directory: Path) -> list[Path]:
    """``hutch-hello`` (``import hutch_hello; hutch_hello.hello()``) and its dependency."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _wheel(directory, "hutch-dep", "def dep():\n    return 'hutch-dep says hi'\n", []),
        _wheel(
            directory,
            "hutch-hello",
            "from hutch_dep import dep\n\ndef hello():\n    return 'hutch-hello and ' + dep()\n",
            ["hutch-dep==1.0.0"],
        ),
    ]


def verdaccio_config(root: Path, listen: str) -> Path:
    """A verdaccio config in ``root`` that listens on ``listen`` (``host:port``), has no
    uplink and lets anyone read and publish."""
    (root / "storage").mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(
        f"""storage: {root / "storage"}
uplinks: {{}}
packages:
  '**':
    access: $all
    publish: $all
    unpublish: $all
listen: {listen}
web:
  enable: false
auth:
  htpasswd:
    file: {root / "htpasswd"}
    max_users: -1
log: {{ type: stdout, format: pretty, level: warn }}
"""
    )
    return config


def _tarball(name: str, package: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    manifest = {
        "name": name,
        "version": "1.0.0",
        "main": "index.js",
        "dependencies": package["dependencies"],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in (
            ("package/package.json", json.dumps(manifest, indent=2)),
            ("package/index.js", package["index.js"]),
        ):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), manifest


def publish_npm(registry: str, *, host: str) -> None:
    """Publish :data:`NPM_PACKAGES` to the registry at URL ``registry`` (trailing slash),
    known to its users by the name ``host``."""
    with httpx.Client(base_url=registry, headers={"Host": host}, timeout=30) as client:
        for name, package in NPM_PACKAGES.items():
            tarball, manifest = _tarball(name, package)
            filename = f"{name}-1.0.0.tgz"
            integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
            version = {
                **manifest,
                "_id": f"{name}@1.0.0",
                "dist": {
                    "shasum": hashlib.sha1(tarball).hexdigest(),
                    "integrity": integrity,
                    "tarball": f"http://{host}/{name}/-/{filename}",
                },
            }
            body = {
                "_id": name,
                "name": name,
                "dist-tags": {"latest": "1.0.0"},
                "versions": {"1.0.0": version},
                "_attachments": {
                    filename: {
                        "content_type": "application/octet-stream",
                        "data": base64.b64encode(tarball).decode(),
                        "length": len(tarball),
                    }
                },
            }
            response = client.put(name, json=body)
            if response.status_code >= 300:
                raise RuntimeError(f"publishing {name} to verdaccio: {response.text}")
