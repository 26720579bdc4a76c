"""``HUTCH_WARM_POOL``: what it accepts, and the clear error for what it does not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hutch.settings import Settings


def test_entries_are_image_shape_and_count() -> None:
    settings = Settings(
        warm_pool="devbox:1:s-1vcpu-256mb=4, node:s-1vcpu-512mb=1,node:s-1vcpu-1gb=0"
    )
    entries = [(e.rootfs, e.shape.id, e.count) for e in settings.warm_pool_entries]
    assert entries == [("devbox:1", "s-1vcpu-256mb", 4), ("node", "s-1vcpu-512mb", 1)]
    assert {e.runtime for e in settings.warm_pool_entries} == {"runc"}
    assert Settings().warm_pool_entries == ()


def test_an_entry_may_name_its_runtime() -> None:
    settings = Settings(
        warm_pool="gvisor:devbox:1:s-1vcpu-256mb=2,devbox:1:s-1vcpu-256mb=3,runc:node:s-1vcpu-512mb=1"
    )
    entries = [(e.runtime, e.rootfs, e.shape.id, e.count) for e in settings.warm_pool_entries]
    assert entries == [("gvisor", "devbox:1", "s-1vcpu-256mb", 2),
                       ("runc", "devbox:1", "s-1vcpu-256mb", 3),
                       ("runc", "node", "s-1vcpu-512mb", 1)]  # fmt: skip
    # As /metrics and /internal/v1/info name them: runc's as before.
    assert [e.name for e in settings.warm_pool_entries] == [
        "gvisor:devbox:1:s-1vcpu-256mb", "devbox:1:s-1vcpu-256mb", "node:s-1vcpu-512mb"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("devbox:1=4", "image 'devbox' is not in"),
        ("devbox:1:s-9vcpu=1", "shape 's-9vcpu' is not in"),
        ("devbox:1:s-1vcpu-256mb", "is not \\[runtime:\\]image:shape=count"),
        ("kata:devbox:1:s-1vcpu-256mb=1", "image 'kata:devbox:1' is not in"),
        ("gvisor:devbox:1:s-1vcpu-256mb=1,gvisor:devbox:1:s-1vcpu-256mb=2", "given twice"),
        ("devbox:1:s-1vcpu-256mb=lots", "the count must be 0-64"),
        ("devbox:1:s-1vcpu-256mb=65", "the count must be 0-64"),
        ("devbox:1:s-1vcpu-256mb=1,devbox:1:s-1vcpu-256mb=2", "is given twice"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(value: str, said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        Settings(warm_pool=value)
