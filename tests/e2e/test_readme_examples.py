"""The README's SDK examples, run as written against a real ``hutch serve`` with real
sandboxes, so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance, run_cli

README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("readme") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


def test_the_readme_has_sdk_examples() -> None:
    assert len(sdk_examples()) >= 3


@pytest.mark.parametrize("index", range(3))
def test_a_readme_example_runs_as_written(server: HutchProcess, index: int, tmp_path: Path) -> None:
    key = run_cli(server.home, "keys", "create", "--user", f"reader{index}").stdout.strip()
    example = tmp_path / "example.py"
    example.write_text(sdk_examples()[index])
    done = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = {0: "demo from ", 1: "failed with 3", 2: "alpha"}[index]
    assert expected in done.stdout, done.stdout
