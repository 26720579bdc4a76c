"""The Dockerfile as hutch reads it (dockerfile-parse underneath) and the build context's
COPY semantics: what a step will do, and the 400 naming the line for what it refuses."""

from __future__ import annotations

import base64
import io
import tarfile
import zipfile

import pytest

from hutch.core.errors import InvalidInput, PayloadTooLarge
from hutch.core.templates.context import BuildContext, decode_context
from hutch.core.templates.dockerfile import ImageSettings, parse, plan


def tar_of(files: dict[str, bytes], *, mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_variables_workdir_user_and_the_start_command() -> None:
    parsed = parse(
        "# a comment\nARG TAG=1\nFROM devbox:1\nARG NAME=world\n"
        'ENV GREETING="hello $NAME" PATH=/opt/bin:$PATH\nWORKDIR app\nWORKDIR sub\n'
        "RUN echo $GREETING \\\n  && true\nUSER app:staff\n"
        'ENTRYPOINT ["python3"]\nCMD ["-m", "http.server"]\nEXPOSE 8000/tcp 9000\n'
        "LABEL team=infra\n"
    )
    assert parsed.base == "devbox:1" and parsed.base_line == 3
    built = plan(parsed, ImageSettings(env={"PATH": "/usr/bin"}))
    (run,) = built.steps
    assert run.argv[:2] == ("/bin/sh", "-c") and run.argv[2].split() == [
        "echo",
        "$GREETING",
        "&&",
        "true",
    ]
    assert run.line == 8 and run.workdir == "/app/sub" and run.user == ""
    assert run.env == {"NAME": "world", "GREETING": "hello world", "PATH": "/opt/bin:/usr/bin"}
    settings = built.settings
    assert settings.env == {"GREETING": "hello world", "PATH": "/opt/bin:/usr/bin"}
    assert (settings.workdir, settings.user) == ("/app/sub", "app:staff")
    assert settings.start == ["python3", "-m", "http.server"]
    assert settings.exposed == ("8000/tcp", "9000") and settings.labels == {"team": "infra"}
    # A shell-form CMD runs under SHELL.
    shell = plan(parse('FROM devbox:1\nSHELL ["/bin/bash", "-lc"]\nCMD echo hi\n'), ImageSettings())
    assert shell.settings.start == ["/bin/bash", "-lc", "echo hi"]


@pytest.mark.parametrize(
    ("dockerfile", "where"),
    [
        ("", "no FROM"),
        ("RUN true\n", "line 1"),
        ("FROM devbox:1\nRUN true\nFROM node\n", "line 3: multi-stage"),
        ("FROM devbox:1\nCOPY --from=build /a /b\n", "line 2: COPY --from"),
        ("FROM devbox:1\nRUN --mount=type=cache,target=/x true\n", "line 2: RUN --mount"),
        ("FROM devbox:1\nRUN <<EOF\n", "line 2: heredocs"),
        ("FROM devbox:1\nONBUILD RUN true\n", "line 2: ONBUILD"),
        ("FROM devbox:1\nFLY away\n", "line 2: unknown instruction"),
        ("FROM $BASE\n", "line 1: FROM must name its image literally"),
        ("FROM devbox:1\nADD http://example.com/a /a\n", "line 2: ADD of a URL"),
        ("FROM devbox:1\nCOPY ../secret /x\n", "line 2: COPY source '../secret' is outside"),
        ("FROM devbox:1\nCOPY onlyone\n", "line 2: COPY needs at least one source"),
        ("FROM devbox:1\nENV 1BAD=x\n", "line 2"),
        ("FROM devbox:1\nEXPOSE http\n", "line 2: EXPOSE 'http'"),
        ("FROM devbox:1\n" + "RUN true\n" * 8000, "64 KiB"),
    ],
)
def test_what_is_refused_names_its_line(dockerfile: str, where: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        plan(parse(dockerfile), ImageSettings())
    assert refused.value.field == "dockerfile"
    assert where in refused.value.message


def copy_of(dockerfile: str, files: dict[str, bytes]) -> tuple[dict[str, bytes], str]:
    step = plan(parse(dockerfile), ImageSettings()).steps[0]
    payload = BuildContext.load(tar_of(files), max_unpacked=1 << 20).payload(step)
    with tarfile.open(fileobj=io.BytesIO(payload.archive)) as archive:
        out = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
    return out, payload.digest


def test_copy_takes_a_directorys_contents_globs_and_files() -> None:
    files = {"src/a.py": b"a", "src/lib/b.py": b"b", "README": b"r", "x.txt": b"x", "y.txt": b"y"}
    assert copy_of("FROM devbox:1\nWORKDIR /app\nCOPY src/ .\n", files)[0] == {
        "app/a.py": b"a",
        "app/lib/b.py": b"b",
    }
    assert copy_of("FROM devbox:1\nCOPY *.txt /data/\n", files)[0] == {
        "data/x.txt": b"x",
        "data/y.txt": b"y",
    }
    assert copy_of("FROM devbox:1\nCOPY README /etc/motd\n", files)[0] == {"etc/motd": b"r"}
    everything, digest = copy_of("FROM devbox:1\nCOPY . /ctx/\n", files)
    assert len(everything) == 5
    changed = copy_of("FROM devbox:1\nCOPY . /ctx/\n", {**files, "x.txt": b"changed"})[1]
    assert changed != digest  # a changed file is a new cache key


def test_add_unpacks_a_local_tar_and_zip_contexts_read_too() -> None:
    inner = tar_of({"pkg/file": b"inside"}, mode="w:gz")
    step = plan(parse("FROM devbox:1\nADD bundle.tgz /opt/\n"), ImageSettings()).steps[0]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("bundle.tgz", inner)
    payload = BuildContext.load(zipped.getvalue(), max_unpacked=1 << 20).payload(step)
    with tarfile.open(fileobj=io.BytesIO(payload.archive)) as archive:
        assert archive.getnames() == ["opt/pkg/file"]


def test_bad_contexts() -> None:
    with pytest.raises(InvalidInput, match="base64"):
        decode_context("not base64!", max_bytes=1024)
    with pytest.raises(PayloadTooLarge):
        decode_context(base64.b64encode(bytes(2048)).decode(), max_bytes=1024)
    with pytest.raises(InvalidInput, match="outside"):
        BuildContext.load(tar_of({"../../etc/passwd": b"x"}), max_unpacked=1 << 20)
    with pytest.raises(PayloadTooLarge):
        BuildContext.load(tar_of({"big": bytes(4096)}), max_unpacked=1024)
    with pytest.raises(InvalidInput, match="neither a tar nor a zip"):
        BuildContext.load(b"plain bytes, no archive", max_unpacked=1024)
    step = plan(parse("FROM devbox:1\nCOPY missing /x\n"), ImageSettings()).steps[0]
    with pytest.raises(ValueError, match="not in the build context"):
        BuildContext.load(tar_of({"here": b""}), max_unpacked=1024).payload(step)
