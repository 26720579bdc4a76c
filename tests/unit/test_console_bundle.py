"""The committed console bundle is built from the committed sources: ``make console``
writes ``SOURCES.sha256`` (the hash of everything the build read), and this recomputes it,
so a change to ``console/`` without a rebuild fails here rather than in a browser."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from hutch.api.console import STATIC

CONSOLE = Path(__file__).resolve().parents[2] / "console"


def sources_hash() -> str:
    """As ``console/build.mjs`` computes it."""
    digest = hashlib.sha256()
    names = ["build.mjs", "package.json", "package-lock.json"]
    names += [f"src/{p.name}" for p in sorted((CONSOLE / "src").iterdir(), key=lambda p: p.name)]
    for name in names:
        digest.update(name.encode() + b"\0" + (CONSOLE / name).read_bytes() + b"\0")
    return digest.hexdigest()


def test_the_committed_bundle_is_built_from_the_sources() -> None:
    stamp = (STATIC / "SOURCES.sha256").read_text().strip()
    assert stamp == sources_hash(), "console/ changed without a rebuild: run `make console`"


def test_the_page_names_only_assets_that_exist() -> None:
    page = (STATIC / "index.html").read_text()
    named = re.findall(r'"/console/assets/([^"]+)"', page)
    assert sorted(p.rsplit(".", 1)[1] for p in named) == ["css", "js"]
    for name in named:
        assert (STATIC / "assets" / name).is_file(), name
    # Nothing from another origin at run time (no CDN).
    for asset in (STATIC / "assets").iterdir():
        if asset.suffix in (".js", ".css"):
            assert not re.search(r"https?://(?!www\.w3\.org/)", asset.read_text()), asset.name


def test_each_gzipped_asset_is_its_asset() -> None:
    assets = [a for a in (STATIC / "assets").iterdir() if a.suffix in (".js", ".css")]
    assert assets
    for asset in assets:
        packed = asset.with_name(asset.name + ".gz")
        assert gzip.decompress(packed.read_bytes()) == asset.read_bytes(), asset.name
