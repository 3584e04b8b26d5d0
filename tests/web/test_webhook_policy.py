"""One switch (TRYON_WEBHOOK_ALLOW_INSECURE) governs the webhook URL policy on both sides: the
API when a try-on is created and the worker before each delivery agree for every value."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any

import pytest
from webapi_support import make_ctx

from tryon.records.db import session_scope
from tryon.records.models import WebhookDelivery


class _Sink(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Sink.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.parametrize("insecure", [False, True])
def test_api_and_worker_agree_on_a_loopback_http_webhook(tmp_path: Path, insecure: bool) -> None:
    from workers.webhooks import deliver_webhook

    server = http.server.HTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    _Sink.hits = []
    ctx = make_ctx(tmp_path, settings_changes={"webhook_allow_insecure": insecure})
    try:
        photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
        r = ctx.client.post("/v1/tryons", json={"photo_id": photo, "garment_id": garment,
                                                "webhook_url": url}, headers=ctx.h("shopper_a"))
        api_accepts = r.status_code == 202
        if not api_accepts:
            assert r.get_json()["error"]["code"] == "webhook_url_not_allowed"
        # the worker's side, on an outbox row for the same URL
        job_id = ctx.add_job("shopper_a", photo, garment)
        with session_scope(ctx.factory) as s:
            row = WebhookDelivery(event_id=f"evt_{job_id}", job_id=job_id,
                                  event_type="tryon.succeeded", url=url, payload={"x": 1})
            s.add(row)
            s.flush()
            delivery_id = row.id
        out = deliver_webhook(ctx.settings, ctx.factory, delivery_id, secret="whsec_test")
        worker_delivers = out.status == "delivered"
        assert api_accepts == worker_delivers == insecure
        assert bool(_Sink.hits) == insecure
    finally:
        server.shutdown()
        ctx.factory.kw["bind"].dispose()
