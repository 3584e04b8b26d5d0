"""The per-shopper open-job cap holds under concurrent creates on PostgreSQL (the account row
is locked while the open jobs are counted)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from webapi_support import make_ctx

from tryon.records.models import TryOnJob


def test_concurrent_creates_never_exceed_the_open_job_cap(tmp_path: Path, pg_url: str) -> None:
    ctx = make_ctx(tmp_path, database_url=pg_url, settings_changes={"max_open_jobs_per_shopper": 3})
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    n = 8
    barrier = threading.Barrier(n)
    codes: list[int] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        client = ctx.app.test_client()
        barrier.wait()
        r = client.post("/v1/tryons", json={"photo_id": photo, "garment_id": garment, "seed": i},
                        headers=ctx.h("shopper_a"))
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] * 3 + [429] * (n - 3), codes
    with ctx.factory() as s:
        count: Any = s.scalar(select(func.count()).select_from(TryOnJob))
    assert count == 3
    ctx.factory.kw["bind"].dispose()
