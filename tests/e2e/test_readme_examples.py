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
from tests.support.server import HutchProcess, remove_instance

README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(
        tmp_path_factory.mktemp("readme") / "home",
        images,
        env={"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": "0"},
    )
    yield process
    process.stop()
    remove_instance(process.home)


def test_the_readme_has_sdk_examples() -> None:
    assert len(sdk_examples()) >= 4


@pytest.mark.parametrize("index", range(4))
def test_a_readme_example_runs_as_written(server: HutchProcess, index: int, tmp_path: Path) -> None:
    key = server.new_key(f"reader{index}")
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
    expected = {0: "demo from ", 1: "failed with 3", 2: "30 100", 3: "alpha"}[index]
    assert expected in done.stdout, done.stdout


def cli_example() -> list[str]:
    text = README.read_text()
    section = text.split("## The `hutch` command line", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_cli_example_runs_as_written(server: HutchProcess, tmp_path: Path) -> None:
    """Line by line, in order, as a user pastes them. Two lines are run elsewhere: `hutch
    shell` needs a terminal (tests/e2e/test_cli_client.py drives it in tmux) and `hutch
    deploy` a funded wallet and a chain (the same file pays on anvil)."""
    key = server.new_key("cli-reader")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "Dockerfile").write_text("FROM devbox:1\nRUN echo from the readme > /readme\n")
    hutch = str(Path(sys.executable).parent / "hutch")
    env = {
        "PATH": f"{Path(hutch).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HUTCH_API_URL": server.url,
        "HUTCH_API_KEY": key,
    }
    ran = []
    for line in cli_example():
        if line.startswith("export "):
            assert "HUTCH_API_URL=" in line and "HUTCH_API_KEY=" in line
            continue
        if line.startswith(("hutch shell", "hutch deploy")):
            continue
        done = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (line, done.stdout[-500:], done.stderr[-500:])
        ran.append((line, done.stdout))
    assert len(ran) >= 5
    assert (tmp_path / "copy.csv").read_text() == "a,b\n1,2\n"
    assert "42" in dict(ran)["hutch exec dev -- python3 -c 'print(6*7)'"]
