"""Schemathesis against a live API on PostgreSQL (issue 11.4): the OpenAPI document must
describe what the server does, and no input may cause a 5xx.

Starts gunicorn (2 workers) on a throwaway PostgreSQL database (migrated with `tryon db
upgrade`) and Redis as broker and rate-limit store, with one shopper, one merchant and one ops
key (each with an uploaded photo / garment so the ids exist), then runs
``schemathesis run --checks all`` once per key. Counts come from gunicorn's access log (every
request the server answered, and how many were 5xx) and from schemathesis' exit status.

    python bench/api_fuzz.py --schemathesis /work/venv-st/bin/schemathesis --max-examples 200

schemathesis lives in its own virtualenv (its pins differ from ours). Rate limits are raised
for the run (the fuzzer sends thousands of unauthenticated and upload requests from one
address); they are tested in tests/web/test_rate_limits.py.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server did not answer {url}")


def _seed(env: dict[str, str]) -> dict[str, str]:
    """Accounts and keys, one photo and one garment (through the records, not the API)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "web"))
    from webapi_support import garment_png, jpeg_bytes

    from tryon.config import load_settings
    from tryon.records.accounts import create_account, create_api_key
    from tryon.records.db import make_engine, make_session_factory, session_scope
    from tryon.records.models import Garment, Photo
    from tryon.storage import make_storage, new_key
    from tryon.types import Category

    settings = load_settings(env)
    storage = make_storage(settings)
    engine = make_engine(settings.resolved_database_url)
    keys: dict[str, str] = {}
    with session_scope(make_session_factory(engine)) as s:
        ids = {}
        for role in ("shopper", "merchant", "ops"):
            acc = create_account(s, name=f"fuzz-{role}", role=role)
            s.flush()
            ids[role] = acc.id
            keys[role] = create_api_key(s, account_id=acc.id).plaintext
        pk = new_key("photos", ids["shopper"], "jpg")
        storage.put(pk, jpeg_bytes((384, 512)), "image/jpeg")
        s.add(Photo(owner_id=ids["shopper"], image_key=pk, width=384, height=512,
                    verdicts={c.value: None for c in Category},
                    placements={c.value: {"box": [96, 102, 288, 410], "category": c.value,
                                          "rule": "fixed", "length": "regular",
                                          "clipped": False} for c in Category}))
        gk, mk = new_key("garments", ids["merchant"], "png"), new_key("masks", ids["merchant"], "png")
        storage.put(gk, garment_png(), "image/png")
        storage.put(mk, garment_png(), "image/png")
        s.add(Garment(owner_id=ids["merchant"], category="upper_body", image_key=gk,
                      mask_key=mk, width=300, height=400))
    engine.dispose()
    _ = io
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemathesis", default="/work/venv-st/bin/schemathesis")
    ap.add_argument("--max-examples", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    ap.add_argument("--st-workers", default="2", help="schemathesis workers")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--roles", default="shopper,merchant,ops")
    ap.add_argument("--keep", action="store_true", help="keep the database and files")
    args = ap.parse_args()

    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="tryon-fuzz-"))
    db = f"tryon_fuzz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYON_")}
    env.update({
        "TRYON_DATA_DIR": str(tmp / "var"),
        "TRYON_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        "TRYON_BROKER_URL": "redis://127.0.0.1:6379/12",
        "TRYON_QUEUE_PREFIX": f"fuzz{uuid.uuid4().hex[:6]}-",
        "TRYON_SECRET_KEY": "fuzz-secret",
        "TRYON_RATE_LIMIT_UPLOADS": "100000/minute",
        "TRYON_RATE_LIMIT_TRYONS": "100000/minute",
        "TRYON_RATE_LIMIT_PER_ADDRESS": "100000/minute",
        "TRYON_RATE_LIMIT_AUTH_FAILURES": "100000/minute",
        "TRYON_MIN_IMAGE_SIDE": "64",
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    })
    py = [sys.executable, "-c", "from tryon.cli import main; main()"]
    subprocess.run([*py, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    keys = _seed(env)
    access = tmp / "access.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "-w",
         str(args.workers), "-b", f"127.0.0.1:{port}", "--access-logfile", str(access),
         "--access-logformat", "%(s)s %(m)s %(U)s", "--error-logfile", str(tmp / "error.log"),
         "web.app:create_app()"],
        env=env, cwd=ROOT, start_new_session=True)
    rcs: dict[str, int] = {}
    try:
        _wait(f"http://127.0.0.1:{port}/healthz")
        for role in args.roles.split(","):
            cmd = [args.schemathesis, "--config-file", str(ROOT / "bench" / "schemathesis.toml"),
                   "run", f"http://127.0.0.1:{port}/openapi.json",
                   "--checks", "all", "-H", f"Authorization: Bearer {keys[role]}",
                   "--max-examples", str(args.max_examples), "--workers", args.st_workers,
                   "--seed", str(args.seed), "--no-color", "--request-timeout", "30",
                   "--continue-on-failure", "--generation-database", "none",
                   "--generation-with-security-parameters", "false"]
            log = tmp / f"st-{role}.log"
            with open(log, "w") as fh:
                rcs[role] = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                           cwd=tmp).returncode
            tail = log.read_text().splitlines()[-12:]
            print(f"--- {role}: schemathesis exit {rcs[role]} (log {log})")
            print("\n".join(tail))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    lines = access.read_text().splitlines()
    statuses = [int(m.group(1)) for ln in lines if (m := re.match(r"(\d{3}) ", ln))]
    fives = sum(1 for s in statuses if s >= 500)
    print(f"requests answered: {len(statuses)}  5xx: {fives}  "
          f"schemathesis exit codes: {rcs}  logs: {tmp}")
    if fives:
        for ln in lines:
            if ln[:1] == "5":
                print("  ", ln)
    if not args.keep:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    sys.exit(0 if not fives and all(rc == 0 for rc in rcs.values()) else 1)


if __name__ == "__main__":
    main()
