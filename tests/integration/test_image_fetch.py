"""An agent fetching an image from other hosts' agents (:mod:`hutch.cluster.images`), with
the real holder routes served over HTTP and the real ``tar`` on both ends.

The cluster test (``tests/e2e/test_cluster_fleet_runc.py``) covers a template fetched by a
real agent and a holder that lacks a layer; here, what two real agents cannot be made to
do on demand: a holder whose stream ``tar`` stops reading before its end (a fault
injector, :class:`_BrokenHolder`, stands for a broken or hostile peer), and two images
that share a layer fetched at the same moment.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from hutch.api.errors import install_error_handlers
from hutch.cluster.images import ImageSource, fetch_image, router
from hutch.core.errors import Unavailable
from hutch.host.layers import LayerStore, StartSettings, image_path, write_image
from hutch.settings import Settings


def _serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _layer(home: Path, key: str, files: dict[str, bytes]) -> Path:
    path = home / "layers" / key
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    (home / "layers" / f"{key}.json").write_text(json.dumps({"size": 1, "made": 0}))
    return path


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageSource]:
    """A host with images ``solo`` (layer ``shared``) and ``pair`` (``shared`` under
    ``top``), served by the real image routes."""
    home = tmp_path_factory.mktemp("holder")
    settings = Settings(home=home, images_dir=home / "images", host_id="holder")
    shared = _layer(home, "shared", {"big": bytes(range(256)) * 40_000, "note": b"shared\n"})
    top = _layer(home, "top", {"note": b"top\n"})
    env = StartSettings(env={"FROM": "holder"})
    write_image(home, "solo", images=settings.images_path, root="", layers=[shared], config=env)
    write_image(home, "pair", images=settings.images_path, root="", layers=[shared, top],
                config=env)  # fmt: skip
    app = FastAPI()
    install_error_handlers(app)
    app.state.services = SimpleNamespace(settings=settings)
    app.include_router(router)
    for address in _serve(app):
        yield ImageSource("holder", address, "unused")


class _BrokenHolder:
    """Fault injector: a peer whose manifest names layer ``shared`` and whose stream is an
    archive's end followed by more bytes, so the fetching ``tar`` exits while they come."""

    def __init__(self) -> None:
        self.app = FastAPI()

        @self.app.get("/internal/v1/images/{name}")
        async def manifest(name: str) -> JSONResponse:
            return JSONResponse({"name": name, "lowers": [{"layer": "shared", "size": 1}],
                                 "env": {}})  # fmt: skip

        @self.app.get("/internal/v1/images/{name}/lowers/{index}")
        async def lower(name: str, index: int) -> StreamingResponse:
            async def chunks() -> AsyncIterator[bytes]:
                yield bytes(1024)  # two zero blocks: the end of a tar archive
                for _ in range(256):
                    yield b"x" * 65536

            return StreamingResponse(chunks(), media_type="application/x-tar")


@pytest.fixture(scope="module")
def broken() -> Iterator[ImageSource]:
    for address in _serve(_BrokenHolder().app):
        yield ImageSource("broken", address, "unused")


def _fetcher(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "fetcher", images_dir=tmp_path / "fetcher" / "images",
                    host_id="fetcher")  # fmt: skip


def _leftovers(settings: Settings) -> list[str]:
    layers = settings.home / "layers"
    return sorted(p.name for p in layers.iterdir() if "fetching" in p.name or ".tmp" in p.name)


def test_a_stream_tar_stops_reading_is_a_failed_fetch_and_the_next_holder_is_tried(
    tmp_path: Path, holder: ImageSource, broken: ImageSource
) -> None:
    settings = _fetcher(tmp_path)
    done = asyncio.run(fetch_image(settings, "solo", [broken, holder]))
    assert done["fetched"] and done["from"] == "holder", done
    got = LayerStore(settings.home / "layers")
    assert got.has("shared")
    assert (got.path("shared") / "note").read_text() == "shared\n"
    assert json.loads(image_path(settings.home, "solo").read_text())["env"]["FROM"] == "holder"
    assert _leftovers(settings) == []

    # With the broken holder alone: a 503 that says what happened, and nothing left.
    other = _fetcher(tmp_path / "alone")
    with pytest.raises(Unavailable) as failed:
        asyncio.run(fetch_image(other, "solo", [broken]))
    assert "from broken" in str(failed.value) and "tar stopped reading" in str(failed.value)
    assert not image_path(other.home, "solo").exists()
    assert _leftovers(other) == []
    assert not LayerStore(other.home / "layers").has("shared")


def test_a_malformed_manifest_is_a_failed_fetch(tmp_path: Path, holder: ImageSource) -> None:
    app = FastAPI()

    @app.get("/internal/v1/images/{name}")
    async def manifest(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "lowers": [{"rootfs": 7}], "env": None})

    settings = _fetcher(tmp_path)
    for address in _serve(app):
        done = asyncio.run(fetch_image(settings, "solo", [ImageSource("odd", address, "-"),
                                                          holder]))  # fmt: skip
        assert done["from"] == "holder", done
        with pytest.raises(Unavailable) as failed:
            asyncio.run(fetch_image(_fetcher(tmp_path / "b"), "solo",
                                    [ImageSource("odd", address, "-")]))  # fmt: skip
        assert "not one" in str(failed.value), failed.value


def test_two_images_sharing_a_layer_fetched_at_once_both_arrive(
    tmp_path: Path, holder: ImageSource
) -> None:
    settings = _fetcher(tmp_path)

    async def both() -> list[Any]:
        return await asyncio.gather(
            fetch_image(settings, "solo", [holder]), fetch_image(settings, "pair", [holder])
        )

    solo, pair = asyncio.run(both())
    assert solo["fetched"] and pair["fetched"], (solo, pair)
    store = LayerStore(settings.home / "layers")
    assert store.has("shared") and store.has("top")
    # The shared layer was copied once: one of the two fetches found it there.
    big = len(bytes(range(256)) * 40_000)
    assert sorted([solo["bytes"] > big, pair["bytes"] > big]) == [False, True], (solo, pair)
    assert _leftovers(settings) == []
    lowers = json.loads(image_path(settings.home, "pair").read_text())["lowers"]
    assert [Path(p).name for p in lowers] == ["top", "shared"]
