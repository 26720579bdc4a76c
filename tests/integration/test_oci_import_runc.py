"""OCI images from a real registry (Debian's docker-registry on loopback), imported with
skopeo and umoci, run as real runc sandboxes."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from hutch.core.errors import InvalidInput
from hutch.core.ids import new_id
from hutch.host.addresses import LinkPool
from hutch.host.drivers.base import SandboxSpec
from hutch.host.drivers.runc import RuncDriver
from hutch.host.images import image_rootfs
from hutch.host.oci_import import ImageImportError, import_image
from hutch.host.oci_ref import RegistryNotAllowed
from hutch.settings import Settings
from tests.support.guest import sh
from tests.support.registry import OciRegistry, derive_image, devbox_layout

pytestmark = pytest.mark.anyio

_pools = itertools.count()


@dataclass(frozen=True)
class PushedImages:
    registry: OciRegistry
    app: str  # registry/team/app:1 — devbox plus a layer, a whiteout and a config
    bare: str  # registry/team/bare:1 — one file: no Python, no shell, nothing else
    nopython: str  # registry/team/nopython:1 — devbox without /usr/bin/python3*
    zeros: str  # registry/team/zeros:1 — 3 MiB of zeros, a few KiB compressed


@pytest.fixture(scope="session")
def pushed(images: Path) -> Iterator[PushedImages]:
    work = Path(tempfile.mkdtemp(prefix="hutch-test-oci-"))
    registry = OciRegistry(work / "registry").start()
    try:
        layout = devbox_layout(images, work / "layout")
        derive_image(
            layout,
            base="devbox",
            tag="app",
            work=work,
            files={
                "/srv/app/hello.txt": "hello from the image\n",
                "/etc/motd": "replaced by the app layer\n",
            },
            whiteouts=["/etc/debian_version", "/usr/share/doc"],
            config=[
                "--config.env=GREETING_FROM_IMAGE=hi there",
                "--config.env=PATH=/opt/tools/bin:/usr/local/bin:/usr/bin:/bin",
                "--config.workingdir=/srv/app",
                "--config.user=nobody",
                "--config.entrypoint=python3",
                "--config.cmd=-m",
                "--config.cmd=http.server",
                "--config.exposedports=8000/tcp",
            ],
        )
        subprocess.run(["umoci", "new", "--image", f"{layout}:empty"], check=True)
        derive_image(layout, base="empty", tag="bare", work=work, files={"/hello": "hi\n"})
        derive_image(layout, base="empty", tag="zeros", work=work,
                     files={"/zeros": "\0" * (3 << 20)})  # fmt: skip
        app = registry.push(layout, "app", "team/app:1")
        bare = registry.push(layout, "bare", "team/bare:1")
        zeros = registry.push(layout, "zeros", "team/zeros:1")
        derive_image(layout, base="devbox", tag="nopython", work=work,
                     whiteouts=["/usr/bin/python3", "/usr/bin/python3.11"])  # fmt: skip
        nopython = registry.push(layout, "nopython", "team/nopython:1")
        yield PushedImages(registry=registry, app=app, bare=bare, zeros=zeros,
                           nopython=nopython)  # fmt: skip
    finally:
        registry.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


@pytest.fixture
def settings_for(tmp_path: Path, pushed: PushedImages) -> Settings:
    return Settings(
        home=tmp_path / "home",
        template_registries=f"registry.example.com, http://{pushed.registry.host}/team",
    )


@pytest.fixture
async def runc(settings_for: Settings) -> AsyncIterator[RuncDriver]:
    driver = RuncDriver(settings_for.home, images=settings_for.images_path)
    await driver.prepare()
    yield driver
    await driver.cleanup(set())
    await driver.uninstall()


def spec_for(rootfs: str) -> SandboxSpec:
    sandbox_id = new_id("sb_")
    pool = LinkPool(IPv4Network(f"10.109.{next(_pools) % 200}.0/24"))  # no e2e test's
    return SandboxSpec(
        id=sandbox_id,
        hostname="oci-test",
        rootfs=rootfs,
        vcpu=1,
        mem_mib=256,
        disk_mib=512,
        link=pool.allocate(sandbox_id),
        env={"FROM_SANDBOX": "yes"},
    )


async def test_an_imported_image_runs_as_a_sandbox_with_its_files_env_and_whiteouts(
    pushed: PushedImages, settings_for: Settings, runc: RuncDriver
) -> None:
    image = await import_image(f"docker://{pushed.app}", settings_for)

    assert image.name == f"oci:{pushed.app}"
    assert image_rootfs(settings_for.images_path, image.name) == image.rootfs
    assert image.config.env["GREETING_FROM_IMAGE"] == "hi there"
    assert image.config.working_dir == "/srv/app"
    assert image.config.user == "nobody"
    assert image.config.start_command == ("python3", "-m", "http.server")
    assert image.config.exposed_ports == ("8000/tcp",)

    spec = spec_for(image.name)
    await runc.create(spec)
    seen = await sh(
        runc,
        spec.id,
        'cat /srv/app/hello.txt /etc/motd; echo "$GREETING_FROM_IMAGE|$FROM_SANDBOX|$PATH"; '
        "test -e /etc/debian_version && echo debian_version-still-there; "
        "test -e /usr/share/doc && echo doc-still-there; "
        "test -x /usr/bin/git && echo git-from-the-base",
    )
    assert seen.splitlines() == [
        "hello from the image",
        "replaced by the app layer",
        "hi there|yes|/opt/tools/bin:/usr/local/bin:/usr/bin:/bin",
        "git-from-the-base",
    ]
    # The image stays read-only underneath: a sandbox's writes land in its own layer.
    await sh(runc, spec.id, "echo changed > /srv/app/hello.txt")
    assert (image.rootfs / "srv/app/hello.txt").read_text() == "hello from the image\n"


async def test_importing_an_unchanged_tag_again_is_a_no_op(
    pushed: PushedImages, settings_for: Settings
) -> None:
    first = await import_image(pushed.app, settings_for)
    lines: list[str] = []
    again = await import_image(pushed.app, settings_for, progress=lines.append)
    assert again.rootfs == first.rootfs and again.digest == first.digest
    assert any("up to date" in line for line in lines), lines


async def test_an_unlisted_registry_is_refused_before_anything_is_fetched(
    pushed: PushedImages, tmp_path: Path
) -> None:
    only_other = Settings(home=tmp_path / "home", template_registries="registry.example.com")
    with pytest.raises(RegistryNotAllowed) as refused:
        await import_image(pushed.app, only_other)
    assert pushed.registry.host in refused.value.message
    assert "registry.example.com" in refused.value.message
    assert refused.value.status == 400
    none_allowed = Settings(home=tmp_path / "home")
    with pytest.raises(RegistryNotAllowed, match="HUTCH_TEMPLATE_REGISTRIES"):
        await import_image(pushed.app, none_allowed)
    # A path outside the allowed prefix of an allowed registry is refused too.
    prefixed = Settings(
        home=tmp_path / "home", template_registries=f"http://{pushed.registry.host}/other"
    )
    with pytest.raises(RegistryNotAllowed):
        await import_image(pushed.app, prefixed)
    assert not (tmp_path / "home" / "images" / "oci").exists()
    with pytest.raises(InvalidInput, match="only registry images"):
        await import_image("oci:/some/layout:tag", none_allowed)


async def test_an_image_without_python_runs_on_the_hosts_guest_runtime(
    pushed: PushedImages, settings_for: Settings, runc: RuncDriver
) -> None:
    image = await import_image(pushed.nopython, settings_for)
    assert not os.path.lexists(image.rootfs / "usr/bin/python3")
    spec = spec_for(image.name)
    await runc.create(spec)
    seen = await sh(
        runc, spec.id,
        "command -v python3 || echo no-python-here; echo $FROM_SANDBOX; cat /etc/debian_version;"
        " ls /.hutch/runtime/bin; env | grep -c -e LD_LIBRARY_PATH -e PYTHONHOME || true",
    )  # fmt: skip
    lines = seen.splitlines()
    assert lines[0] == "no-python-here" and lines[1] == "yes", lines
    assert lines[3] == "python3" and lines[4] == "0", lines
    # An image with nothing but one file (no shell, no libc): the agent still answers
    # and serves its files.
    bare = await import_image(pushed.bare, settings_for)
    empty = spec_for(bare.name)
    await runc.create(empty)
    assert (await runc.guest(empty.id).ping())["ok"]
    download = await runc.guest(empty.id).read_file("/hello")
    assert b"".join([chunk async for chunk in download.chunks]) == b"hi\n"


async def test_an_image_over_the_size_cap_is_refused_before_or_after_unpacking(
    pushed: PushedImages, settings_for: Settings
) -> None:
    small = settings_for.model_copy(update={"image_import_max_bytes": 2 << 20})
    # devbox's layers are ~100 MiB compressed: refused from the manifest, nothing pulled.
    with pytest.raises(ImageImportError, match=r"MiB compressed, over this host's cap of 2 MiB"):
        await import_image(pushed.app, small)
    assert not list((small.images_path / "oci").glob("*/*.partial"))
    # 3 MiB of zeros compress to a few KiB: refused once unpacked, and nothing kept.
    with pytest.raises(ImageImportError, match=r"unpacks to 3 MiB, over this host's cap"):
        await import_image(pushed.zeros, small)
    assert image_rootfs(small.images_path, f"oci:{pushed.zeros}") is None
    assert not list((small.images_path / "oci").glob("*/*.partial"))


async def test_a_missing_tag_is_an_import_error_naming_the_registry_answer(
    pushed: PushedImages, settings_for: Settings
) -> None:
    with pytest.raises(ImageImportError, match="manifest unknown"):
        await import_image(f"{pushed.registry.host}/team/app:nope", settings_for)


def test_the_cli_imports_and_lists_an_image_and_refuses_an_unlisted_registry(
    pushed: PushedImages, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HUTCH_HOME": str(tmp_path / "home"),
        "HUTCH_TEMPLATE_REGISTRIES": f"http://{pushed.registry.host}",
    }
    hutch = [sys.executable, "-m", "hutch", "images"]
    done = subprocess.run([*hutch, "import", f"docker://{pushed.app}"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"oci:{pushed.app}"
    listed = subprocess.run([*hutch, "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert f"oci:{pushed.app} imported" in listed.stdout
    refused = subprocess.run(
        [*hutch, "import", f"docker://{pushed.app}"],
        env={**env, "HUTCH_TEMPLATE_REGISTRIES": "registry.example.com"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "not from an allowed registry" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_a_registry_that_needs_credentials_is_pulled_with_the_operators_auth_file(
    pushed: PushedImages, tmp_path: Path
) -> None:
    locked = OciRegistry(tmp_path / "locked", users={"puller": "s3cret-pw"}).start()
    try:
        reference = locked.copy_from(pushed.bare, "team/bare:1",
                                     creds="puller:s3cret-pw")  # fmt: skip
        anonymous = Settings(home=tmp_path / "home", template_registries=f"http://{locked.host}")
        with pytest.raises(ImageImportError, match=r"(?i)unauthorized|authentication required"):
            await import_image(reference, anonymous)
        missing = anonymous.model_copy(update={"template_registry_auth_file": tmp_path / "no"})
        with pytest.raises(ImageImportError, match="HUTCH_TEMPLATE_REGISTRY_AUTH_FILE"):
            await import_image(reference, missing)
        auth = tmp_path / "auth.json"
        token = base64.b64encode(b"puller:s3cret-pw").decode()
        auth.write_text(json.dumps({"auths": {locked.host: {"auth": token}}}))
        with_auth = anonymous.model_copy(update={"template_registry_auth_file": auth})
        image = await import_image(reference, with_auth)
        assert (image.rootfs / "hello").read_text() == "hi\n"
    finally:
        locked.stop()
