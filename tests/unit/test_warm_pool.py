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
    assert Settings().warm_pool_entries == ()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("devbox:1=4", "image 'devbox' is not in"),
        ("devbox:1:s-9vcpu=1", "shape 's-9vcpu' is not in"),
        ("devbox:1:s-1vcpu-256mb", "is not image:shape=count"),
        ("devbox:1:s-1vcpu-256mb=lots", "the count must be 0-64"),
        ("devbox:1:s-1vcpu-256mb=65", "the count must be 0-64"),
        ("devbox:1:s-1vcpu-256mb=1,devbox:1:s-1vcpu-256mb=2", "is given twice"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(value: str, said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        Settings(warm_pool=value)
