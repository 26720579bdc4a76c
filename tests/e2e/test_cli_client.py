"""The ``hutch`` command line as a user meets it: the installed console script, run as a
subprocess against a real ``hutch serve``. The fake driver serves most tests; ``hutch
shell`` runs on a real terminal (tmux) against real sandboxes (runc); ``hutch deploy``
gets its quote from a server that takes payments, and pays on a local chain (anvil)."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hutch.host.drivers.fake import FakeDriver
from tests.conftest import LocalChains
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.images import fake_image
from tests.support.seaweed import SeaweedS3
from tests.support.server import HutchProcess, remove_instance, run_cli
from tests.support.wallet import Wallet

HUTCH = Path(sys.executable).with_name("hutch")
PAY_TO = Wallet.new().address
MONTH = 500_000  # $0.50 in a 6-decimal token: the price of one month
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def cli_env(server: HutchProcess, key: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUTCH_", "AWS_"))}
    env["HUTCH_API_URL"] = server.url
    if key is not None:
        env["HUTCH_API_KEY"] = key
    return env | extra


def hutch(
    server: HutchProcess,
    key: str | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """``hutch ARGS…`` configured the usual way, by HUTCH_API_URL and HUTCH_API_KEY."""
    return subprocess.run(
        [str(HUTCH), *args],
        env=cli_env(server, key, **(env or {})),
        input=stdin.decode() if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(answer: subprocess.CompletedProcess[str]) -> str:
    assert answer.returncode == 0, answer.stderr
    return answer.stdout


def assert_one_error(answer: subprocess.CompletedProcess[str], code: int, *said: str) -> None:
    """Exit ``code``, and on stderr one ``error:`` line (saying ``said``) and a hint."""
    assert answer.returncode == code, (answer.stdout, answer.stderr)
    lines = answer.stderr.strip().splitlines()
    assert "Traceback" not in answer.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, answer.stderr
    assert any(line.startswith("hint: ") for line in lines), answer.stderr
    for words in said:
        assert words in errors[0], errors[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HutchProcess]:
    root = tmp_path_factory.mktemp("cli")
    fake_image(root / "images", "devbox:1")
    env = {
        "HUTCH_IMAGES_DIR": str(root / "images"),
        "HUTCH_PROXY_ENABLED": "true",  # previews, and deploys need them
        "HUTCH_PROXY_PORT": "0",
        "HUTCH_PAY_TO": PAY_TO,  # deploys are paid, but no chain is configured
        "HUTCH_AGENT_REQUESTS_PER_MINUTE": "1000",
    }
    process = HutchProcess(root / "home", env=env).wait_ready()
    yield process
    process.stop()
    asyncio.run(FakeDriver(root / "home" / "fake-sandboxes").cleanup(set()))


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return run_cli(server.home, "keys", "create", "--user", "cli-user").stdout.strip()


@pytest.fixture
def box(server: HutchProcess, key: str) -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = json.loads(ok(hutch(server, key, "sandbox", "create", "--json")))
    yield made
    hutch(server, key, "sandbox", "rm", made["id"])


# --- help ---------------------------------------------------------------------------------

COMMANDS = [
    "sandbox", "sandbox create", "sandbox ls", "sandbox get", "sandbox rm", "sandbox pause",
    "sandbox resume", "exec", "cp", "shell", "network", "network create", "network ls",
    "network get", "network rm", "network attach", "network detach", "disk", "disk register",
    "disk ls", "disk get", "disk rm", "disk attach", "disk detach", "preview", "deploy", "ssh",
    "tunnel", "egress", "bandwidth",
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_with_an_example(command: str) -> None:
    shown = subprocess.run([str(HUTCH), *command.split(), "--help"], capture_output=True,
                           text=True, check=True, env={**os.environ, "COLUMNS": "100"})  # fmt: skip
    assert "Example" in shown.stdout, shown.stdout


def test_shell_completion_stays_available() -> None:
    shown = subprocess.run([str(HUTCH), "--help"], capture_output=True, text=True, check=True)
    assert "--install-completion" in shown.stdout and "--show-completion" in shown.stdout


# --- sandboxes ----------------------------------------------------------------------------


def test_a_sandbox_from_create_to_rm(server: HutchProcess, key: str) -> None:
    name = unique("cli-box")
    made = json.loads(
        ok(hutch(server, key, "sandbox", "create", "--name", name, "--env", "A=1",
                 "-e", "B=two=2", "--timeout", "600", "--json"))
    )  # fmt: skip
    assert made["id"].startswith("sb_") and made["name"] == name
    assert made["status"] == "running" and sorted(made["envs"]) == ["A", "B"]

    table = ok(hutch(server, key, "sandbox", "ls")).splitlines()
    assert table[0].split() == ["ID", "NAME", "STATUS", "SHAPE", "IP", "CREATED"]
    [row] = [line for line in table if made["id"] in line]
    assert row.split()[:5] == [made["id"], name, "running", made["shape"], made["ip"]]
    assert made["id"] in [s["id"] for s in json.loads(ok(hutch(server, key, "sandbox", "ls",
                                                               "--json")))]  # fmt: skip
    assert made["id"] in ok(hutch(server, key, "sandbox", "ls", "-q")).split()

    shown = ok(hutch(server, key, "sandbox", "get", name))
    assert re.search(rf"^id\s+{made['id']}$", shown, re.M) and "256 MiB" in shown
    assert (
        json.loads(ok(hutch(server, key, "sandbox", "get", made["id"], "--json")))["id"]
        == (made["id"])
    )

    assert ok(hutch(server, key, "sandbox", "pause", name)) == f"{made['id']} paused\n"
    assert (
        json.loads(ok(hutch(server, key, "sandbox", "ls", "--status", "paused", "--json")))[0]["id"]
        == made["id"]
    )
    resumed = json.loads(ok(hutch(server, key, "sandbox", "resume", name, "--json")))
    assert resumed["status"] == "running"

    removed = hutch(server, key, "sandbox", "rm", made["id"], "sb_missing")
    assert removed.stdout == f"{made['id']}\n", "the one that exists is removed"
    assert_one_error(removed, 3, "sb_missing")
    history = json.loads(ok(hutch(server, key, "sandbox", "ls", "--status", "destroyed",
                                  "--json")))  # fmt: skip
    assert made["id"] in [s["id"] for s in history]


def test_exec_streams_output_as_it_comes_and_exits_with_the_commands_code(
    server: HutchProcess, key: str, box: dict[str, Any]
) -> None:
    seven = hutch(server, key, "exec", box["id"], "--", "sh", "-c",
                  "echo out; echo err >&2; exit 7")  # fmt: skip
    assert (seven.returncode, seven.stdout, seven.stderr) == (7, "out\n", "err\n")

    slow = subprocess.Popen(
        [str(HUTCH), "exec", box["id"], "--", "sh", "-c", "echo first; sleep 4; echo second"],
        env=cli_env(server, key), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert slow.stdout is not None
    assert slow.stdout.readline() == b"first\n"
    assert slow.poll() is None, "the first line came while the command still ran"
    assert slow.stdout.read() == b"second\n" and slow.wait(30) == 0

    env = hutch(server, key, "exec", "-e", "GREETING=hi there", box["name"], "--",
                "sh", "-c", 'echo "$GREETING"; exit 0')  # fmt: skip
    assert (env.returncode, env.stdout) == (0, "hi there\n")
    fed = hutch(server, key, "exec", "--stdin", box["id"], "--", "cat", stdin=b"from stdin\n")
    assert fed.stdout == "from stdin\n"
    as_json = json.loads(ok(hutch(server, key, "exec", "--json", box["id"], "--", "sh", "-c",
                                  "echo hi; exit 0")))  # fmt: skip
    assert as_json == {"stdout": "hi\n", "stderr": "", "exit_code": 0, "error": None}
    failed = hutch(server, key, "exec", "--json", box["id"], "--", "sh", "-c", "exit 5")
    assert failed.returncode == 5 and json.loads(failed.stdout)["exit_code"] == 5


def test_cp_streams_files_both_ways(
    server: HutchProcess, key: str, box: dict[str, Any], tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    ok(hutch(server, key, "cp", str(big), f"{box['id']}:/tmp/"))
    ok(hutch(server, key, "cp", f"{box['name']}:/tmp/big.bin", str(tmp_path / "back.bin")))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    into = tmp_path / "into"
    into.mkdir()
    ok(hutch(server, key, "cp", f"{box['id']}:/tmp/big.bin", str(into)))
    assert (into / "big.bin").read_bytes() == big.read_bytes()
    assert [p.name for p in into.iterdir()] == ["big.bin"], "no partial file is left behind"

    ok(hutch(server, key, "cp", "-", f"{box['id']}:/etc/motd", stdin=b"hello from stdin\n"))
    assert ok(hutch(server, key, "cp", f"{box['id']}:/etc/motd", "-")) == "hello from stdin\n"

    missing = hutch(server, key, "cp", f"{box['id']}:/no/such/file", str(tmp_path / "x"))
    assert_one_error(missing, 3, "/no/such/file")
    assert not (tmp_path / "x").exists()
    assert_one_error(hutch(server, key, "cp", "a", "b"), 2, "SANDBOX:/")
    assert_one_error(hutch(server, key, "cp", str(tmp_path / "nope"), f"{box['id']}:/tmp/x"), 1,
                     "cannot read")  # fmt: skip


# --- errors -------------------------------------------------------------------------------


def test_errors_are_one_line_with_a_hint_and_an_exit_code(
    server: HutchProcess, key: str, box: dict[str, Any]
) -> None:
    assert_one_error(hutch(server, key, "sandbox", "get", "sb_nope"), 3, "sb_nope")
    assert_one_error(hutch(server, key, "exec", "sb_nope", "--", "true"), 3, "sb_nope")
    assert_one_error(hutch(server, key, "network", "get", "no-such-net"), 3, "no-such-net")
    assert_one_error(hutch(server, "hk_not_a_key", "sandbox", "ls"), 4, "API key")
    assert_one_error(hutch(server, None, "sandbox", "ls"), 4, "no API key")
    assert_one_error(hutch(server, None, "sandbox", "ls", "--api-key", "hk_wrong"), 4, "API key")
    assert ok(hutch(server, None, "sandbox", "ls", "-q", "--api-key", key)), "the option works"
    unreachable = hutch(server, key, "sandbox", "ls", env={"HUTCH_API_URL": "http://127.0.0.1:9"})
    assert_one_error(unreachable, 1, "cannot reach hutch at http://127.0.0.1:9")
    elsewhere = hutch(server, key, "sandbox", "ls", "--api-url", "http://127.0.0.1:9")
    assert_one_error(elsewhere, 1, "http://127.0.0.1:9")
    assert_one_error(hutch(server, key, "sandbox", "create", "--shape", "s-huge"), 1, "shape")
    assert_one_error(hutch(server, key, "sandbox", "create", "--env", "NOEQUALS"), 2, "--env")
    assert hutch(server, key, "sandbox", "get").returncode == 2, "typer's own usage errors"
    not_a_terminal = hutch(server, key, "shell", box["id"])
    assert_one_error(not_a_terminal, 1, "terminal")
    assert "hutch exec" in not_a_terminal.stderr


# --- networks, disks, previews ------------------------------------------------------------


def test_networks(server: HutchProcess, key: str, box: dict[str, Any]) -> None:
    name = unique("net")
    made = json.loads(ok(hutch(server, key, "network", "create", name, "--json")))
    assert made["name"] == name
    assert name in ok(hutch(server, key, "network", "ls"))
    assert made["id"] in [n["id"] for n in json.loads(ok(hutch(server, key, "network", "ls",
                                                                "--json")))]  # fmt: skip
    ok(hutch(server, key, "network", "attach", box["id"], name))
    ok(hutch(server, key, "network", "attach", box["id"], name))  # again: nothing changes
    shown = ok(hutch(server, key, "network", "get", name))
    assert box["id"] in shown and box["name"] in shown
    [member] = json.loads(ok(hutch(server, key, "network", "get", name, "--json")))["members"]
    assert member["sandbox_id"] == box["id"]
    assert_one_error(hutch(server, key, "network", "rm", name), 1, "members")
    ok(hutch(server, key, "network", "detach", box["id"], name))
    assert ok(hutch(server, key, "network", "rm", name)) == f"{made['id']}\n"
    assert_one_error(hutch(server, key, "network", "rm", name), 3, name)


def test_disks(server: HutchProcess, key: str, box: dict[str, Any], s3: SeaweedS3) -> None:
    bucket, name = s3.make_bucket(unique("cli-bucket")), unique("data")
    register = ["disk", "register", name, "--bucket", bucket, "--endpoint", s3.endpoint,
                "--path-style"]  # fmt: skip
    assert_one_error(hutch(server, key, *register), 2, "keys")
    keys = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    made = json.loads(ok(hutch(server, key, *register, "--json", env=keys)))
    assert made["name"] == name and s3.secret_key not in json.dumps(made)
    assert bucket in ok(hutch(server, key, "disk", "ls"))
    shown = ok(hutch(server, key, "disk", "get", name))
    assert bucket in shown and s3.secret_key not in shown
    ok(hutch(server, key, "disk", "attach", box["id"], name, "/data", "--sub-path", "p"))
    assert_one_error(hutch(server, key, "disk", "rm", name), 1)
    ok(hutch(server, key, "disk", "detach", box["id"], name, "/data"))
    assert ok(hutch(server, key, "disk", "rm", name)) == f"{made['id']}\n"
    again = hutch(server, key, *register, "--access-key", s3.access_key, "--secret-key", "wrong")
    assert again.returncode == 1 and "error: " in again.stderr


def test_preview_prints_a_url(server: HutchProcess, key: str, box: dict[str, Any]) -> None:
    url = ok(hutch(server, key, "preview", box["id"], "8000")).strip()
    assert re.fullmatch(r"https?://8000-\S+", url), url
    assert json.loads(ok(hutch(server, key, "preview", box["name"], "8000", "--json")))["url"]
    assert hutch(server, key, "preview", box["id"], "70000").returncode == 2


# --- deploy -------------------------------------------------------------------------------


def project(root: Path) -> Path:
    """A static site, with folders that must not be uploaded."""
    app = root / "my-site"
    (app / "assets").mkdir(parents=True)
    (app / "index.html").write_text("<h1>hello</h1>")
    (app / "assets" / "style.css").write_text("h1 { color: red }")
    for skipped in (".git", "node_modules/left-pad", ".venv/bin", "assets/__pycache__"):
        (app / skipped).mkdir(parents=True)
        (app / skipped / "junk").write_text("not uploaded")
    return app


def test_deploy_uploads_the_project_without_vcs_and_dependencies(tmp_path: Path) -> None:
    from hutch.cli.deploy import pack

    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(pack(project(tmp_path)))))
    assert sorted(archive.namelist()) == ["app/assets/style.css", "app/index.html"]


def test_deploy_without_payment_prints_the_quote(server: HutchProcess, tmp_path: Path) -> None:
    wallet = Wallet.new()
    key_file = tmp_path / "wallet.key"
    key_file.write_text(wallet.key + "\n")
    site = project(tmp_path)
    quoted = hutch(server, None, "deploy", str(site), "--key-file", str(key_file))
    assert_one_error(quoted, 1, "payment required")
    for words in ("Payment required to deploy my-site", "0.500000 USDC", "arbitrum (chain id",
                  PAY_TO, "--payment-tx", "--pay --rpc-url"):  # fmt: skip
        assert words in quoted.stdout, quoted.stdout

    as_json = hutch(server, None, "deploy", str(site), "--name", "my-site-3", "--months", "3",
                    "--json", env={"HUTCH_WALLET_KEY": wallet.key})  # fmt: skip
    assert as_json.returncode == 1
    quote = json.loads(as_json.stdout)
    assert (quote["amount_token"], quote["pay_to"], quote["token"]) == ("1500000", PAY_TO, "usdc")

    assert_one_error(hutch(server, None, "deploy", str(site)), 4, "wallet key")
    assert_one_error(hutch(server, None, "deploy", str(site), "--pay",
                           env={"HUTCH_WALLET_KEY": wallet.key}), 2, "--rpc-url")  # fmt: skip
    assert_one_error(hutch(server, None, "deploy", str(site), "--name", "X!",
                           env={"HUTCH_WALLET_KEY": wallet.key}), 1, "uniqueName")  # fmt: skip


def test_deploy_pays_on_chain_and_follows_the_build(tmp_path: Path, chains: LocalChains) -> None:
    """The whole paid path on a local chain; the fake driver runs the app's command (which
    fails here), so the deploy ends failed, with the reason."""
    fake_image(tmp_path / "images", "devbox:1")
    env = {f"HUTCH_{name.upper()}": value for name, value in chains.env().items()}
    paying = HutchProcess(tmp_path / "home", env={
        **env, "HUTCH_IMAGES_DIR": str(tmp_path / "images"), "HUTCH_PROXY_ENABLED": "true",
        "HUTCH_PROXY_PORT": "0", "HUTCH_PAY_TO": PAY_TO, "HUTCH_DEPLOY_HEALTH_TIMEOUT_S": "5",
        "HUTCH_AGENT_REQUESTS_PER_MINUTE": "1000",
    }).wait_ready()  # fmt: skip
    try:
        wallet = Wallet.new()
        usdc = chains.tokens["arbitrum"]["usdc"]
        wallet.fund(chains.arbitrum, usdc, 3 * MONTH)
        deployed = hutch(
            paying, None, "deploy", str(project(tmp_path)), "--name", "paid-site",
            "--run-command", "echo starting; exit 3", "--pay", "--rpc-url", chains.arbitrum.url,
            env={"HUTCH_WALLET_KEY": wallet.key},
        )  # fmt: skip
        assert_one_error(deployed, 1, "failed")
        assert re.search(r"sent 500000 base units of usdc to 0x\w+ on arbitrum: 0x[0-9a-f]{64}",
                         deployed.stderr), deployed.stderr  # fmt: skip
        contract = chains.arbitrum.web3().eth.contract(
            address=usdc,
            abi=[{"name": "balanceOf", "type": "function", "stateMutability": "view",
                  "inputs": [{"name": "o", "type": "address"}],
                  "outputs": [{"name": "", "type": "uint256"}]}],
        )  # fmt: skip
        assert contract.functions.balanceOf(wallet.address).call() == 2 * MONTH

        poor = Wallet.new()
        broke = hutch(paying, None, "deploy", str(project(tmp_path / "again")), "--pay",
                      "--rpc-url", chains.arbitrum.url, "--token-address", usdc,
                      env={"HUTCH_WALLET_KEY": poor.key})  # fmt: skip
        assert_one_error(broke, 1, "holds 0 base units")
    finally:
        paying.stop()
        asyncio.run(FakeDriver(tmp_path / "home" / "fake-sandboxes").cleanup(set()))


# --- hutch shell, on a real terminal --------------------------------------------------------


class Tmux:
    """A tmux server of our own, its one pane 120x40 and kept when its command ends."""

    def __init__(self, root: Path) -> None:
        self.socket = root / "tmux.sock"
        self.conf = root / "tmux.conf"
        self.conf.write_text("set -g status off\nset -g remain-on-exit on\n")

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
                              capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        return done.stdout

    def screen(self, *, escapes: bool = False) -> str:
        return self("capture-pane", "-p", "-J", *(["-e"] if escapes else []), "-t", "cli")

    def wait_for(self, pattern: str, *, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, screen := self.screen(), re.M):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never showed:\n{self.screen()}")

    def type(self, line: str) -> None:
        self("send-keys", "-t", "cli", "-l", line)
        self("send-keys", "-t", "cli", "Enter")

    def wait_dead(self, *, timeout: float = 30) -> None:
        """Wait for the pane's command to end. (tmux 3.3 can leave a dead pane's
        ``pane_dead_status`` empty for good, its child unreaped, about one run in five
        here: the command's own exit code is read from a file the command writes.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self("display", "-p", "-t", "cli", "#{pane_dead}").strip() == "1":
                return
            time.sleep(0.2)
        raise AssertionError(f"the pane's command did not end:\n{self.screen()}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is missing: make test installs it (Debian's tmux)"
    root = Path(tempfile.mkdtemp(prefix="hutch-tmux-"))
    yield Tmux(root)
    subprocess.run(["tmux", "-S", str(root / "tmux.sock"), "kill-server"], check=False,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runc(tmp_path: Path, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


def test_shell_is_interactive_on_a_real_terminal(
    runc: HutchProcess, tmux: Tmux, tmp_path: Path
) -> None:
    key = run_cli(runc.home, "keys", "create", "--user", "shell-user").stdout.strip()
    box = json.loads(ok(hutch(runc, key, "sandbox", "create", "--json")))
    before, after = tmp_path / "stty.before", tmp_path / "stty.after"
    exit_code = tmp_path / "exit-code"
    script = (
        f"export HUTCH_API_URL={runc.url} HUTCH_API_KEY={key}; stty -g > {before}; "
        f"{HUTCH} shell {box['id']}; code=$?; stty -g > {after}; echo $code > {exit_code}"
    )
    tmux("new-session", "-d", "-s", "cli", "-x", "120", "-y", "40", "sh", "-c", script)
    try:
        tmux.wait_for(r"\S+@\S+:\S*[#$] ?$")  # bash's prompt, from the sandbox
        tmux.type("stty size; tty")
        screen = tmux.wait_for(r"^/dev/pts/\d+")
        assert re.search(r"^40 120$", screen, re.M), screen

        tmux.type("sleep 100")
        time.sleep(1)
        tmux("send-keys", "-t", "cli", "C-c")
        tmux.type("echo alive-$((40+2))")
        tmux.wait_for(r"^alive-42$", timeout=10)  # sleep 100 was interrupted, bash lives

        tmux.type(r"printf '\033[31mred\033[0m\n'")
        tmux.wait_for(r"^red$")
        assert "\x1b[31mred" in tmux.screen(escapes=True), "colours pass through"

        tmux("resize-window", "-t", "cli", "-x", "100", "-y", "30")
        tmux.type("clear; stty size")
        tmux.wait_for(r"^30 100$")

        tmux.type("exit 3")
        tmux.wait_dead()
        assert exit_code.exists(), f"hutch shell did not end the script:\n{tmux.screen()}"
        assert exit_code.read_text().strip() == "3", tmux.screen()
        assert after.read_text() == before.read_text(), "the terminal is restored"
    finally:
        hutch(runc, key, "sandbox", "rm", box["id"])
