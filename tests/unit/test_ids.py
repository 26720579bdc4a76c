import re
import time

from hutch.core.ids import new_id, new_ulid

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_ulids_are_crockford_base32_and_sort_by_time() -> None:
    earlier = new_ulid(now_ms=1_700_000_000_000)
    later = new_ulid(now_ms=1_700_000_000_001)
    assert ULID.match(earlier) and ULID.match(later)
    assert earlier < later


def test_ids_carry_their_prefix_and_do_not_collide() -> None:
    ids = {new_id("sb_") for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(i.startswith("sb_") and ULID.match(i[3:]) for i in ids)
    assert new_id("net-", lower=True)[4:].islower()


def test_ulid_time_part_is_now() -> None:
    ulid = new_ulid()
    ms = 0
    for char in ulid[:10]:
        ms = ms * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert abs(ms - time.time() * 1000) < 60_000
