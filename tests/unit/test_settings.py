from pathlib import Path

import pytest
from pydantic import ValidationError

from hutch.settings import Settings
from hutch.store.db import normalize_url


def test_environment_with_hutch_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUTCH_HOME", str(tmp_path))
    monkeypatch.setenv("HUTCH_PORT", "9123")
    monkeypatch.setenv("HUTCH_HOST", "127.0.0.2")
    settings = Settings()
    assert (settings.home, settings.port, settings.host) == (tmp_path, 9123, "127.0.0.2")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'hutch.db'}"
    assert settings.base_url == "http://127.0.0.2:9123"


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_PORT", "9123")
    assert Settings(port=9000).port == 9000


def test_shapes_are_configurable_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HUTCH_SHAPES", '[{"id": "s-tiny", "vcpu": 1, "mem_mib": 128, "default_disk_mib": 512}]'
    )
    shapes = Settings().shapes
    assert [(s.id, s.vcpu, s.mem_mib, s.default_disk_mib) for s in shapes] == [
        ("s-tiny", 1, 128, 512)
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 70000},
        {"default_rootfs": "windows:11"},
        {"shapes": []},
        {"shapes": [{"id": "a", "vcpu": 1, "mem_mib": 128, "default_disk_mib": 512}] * 2},
        {"shapes": [{"id": "a", "vcpu": 0, "mem_mib": 128, "default_disk_mib": 512}]},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_database_urls_get_async_drivers() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("sqlite:////tmp/x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ValueError, match="unsupported database"):
        normalize_url("mysql://u@h/db")


def test_deploys_get_the_first_shape_with_a_gibibyte_unless_one_is_named() -> None:
    from hutch.core.catalog import Shape

    small = Shape(id="small", vcpu=1, mem_mib=512, default_disk_mib=1024)
    big = Shape(id="big", vcpu=2, mem_mib=2048, default_disk_mib=1024)
    assert Settings(shapes=(small, big)).resolved_deploy_shape == "big"
    assert Settings(shapes=(small,)).resolved_deploy_shape == "small"
    assert Settings(shapes=(small, big), deploy_shape="small").resolved_deploy_shape == "small"
    with pytest.raises(ValueError, match="deploy_shape"):
        Settings(shapes=(small,), deploy_shape="big")
