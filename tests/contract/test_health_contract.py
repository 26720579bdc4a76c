"""``/healthz`` and ``/readyz`` as CREATEOS-API.md §17.5 says (and seed 001): no auth, JSend,
``{up}`` and ``{ready, reason?, scheduler_last_ok_ms_ago}``. The 503 (database gone) is in
tests/e2e/test_identity.py, with a real PostgreSQL stopped under a running server."""

from __future__ import annotations

import httpx

from tests.support.server import HutchProcess


def test_liveness(fake_server: HutchProcess) -> None:
    with httpx.Client(base_url=fake_server.url) as anonymous:
        answer = anonymous.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "success", "data": {"up": True}}


def test_readiness_reports_the_scheduler(fake_server: HutchProcess) -> None:
    with httpx.Client(base_url=fake_server.url) as anonymous:
        answers = [anonymous.get("/readyz") for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 200 and answer.json()["status"] == "success"
        data = answer.json()["data"]
        assert set(data) == {"ready", "scheduler_last_ok_ms_ago"}, "reason only when not ready"
        assert data["ready"] is True and isinstance(data["scheduler_last_ok_ms_ago"], int)
        assert data["scheduler_last_ok_ms_ago"] >= 0
