"""A batch's manifest and archive: what reproduces a generated set.

One JSON object per stored result (per item when it has none), in item order: the item, its
job, kind and status, the engine, what went in (ids, checksums, box; a composition's plan
record), the sampling parameters and seed, the engine version and weights checksum, and the
result's file name in the archive with its sha256. The archive is a zip of ``manifest.jsonl``
and ``results/<item>_<sample>.png``.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tryon.records.models import TryOnJob, TryOnResult
from tryon.storage import ObjectNotFoundError, Storage


def children(session: Session, parent_id: str) -> list[TryOnJob]:
    """A batch's children in item order."""
    rows = session.scalars(
        select(TryOnJob).where(TryOnJob.parent_id == parent_id)
        .execution_options(populate_existing=True)).all()
    return sorted(rows, key=lambda j: int((j.params or {}).get("batch_index", 0)))


def manifest_lines(session: Session, parent_id: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for child in children(session, parent_id):
        params = dict(child.params or {})
        results = session.scalars(select(TryOnResult).where(TryOnResult.job_id == child.id)
                                  .order_by(TryOnResult.index)).all()
        base: dict[str, Any] = {
            "item": params.get("batch_index"), "job_id": child.id, "kind": child.kind,
            "status": child.status, "engine": child.engine, "photo_id": child.photo_id,
            "garment_id": child.garment_id,
            "params": {k: v for k, v in params.items() if k != "inputs"}}
        if child.error_code:
            base["error"] = child.error_code
        if not results:
            lines.append(base)
        for r in results:
            rec = dict(r.record or {})
            inputs = rec.get("inputs") or {}
            lines.append({
                **base, "sample": r.index, "seed": r.seed,
                "file": f"{int(params.get('batch_index', 0)):04d}_{r.index}.png",
                "sha256": r.sha256, "width": r.width, "height": r.height,
                "inputs": inputs, "box": inputs.get("box"),
                "engine_version": rec.get("engine_version"),
                "weights_checksum": rec.get("weights_checksum"), "compose": rec.get("compose"),
            })
    return lines


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x, sort_keys=True, default=str) + "\n" for x in lines).encode()


def build_archive(session: Session, storage: Storage, parent_id: str) -> bytes:
    """The zip of a batch's results so far and its manifest (a result whose object retention
    removed meanwhile is listed with ``file: null``). Built in memory: bounded by the batch
    size limit times the samples per item."""
    lines = manifest_lines(session, parent_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for line in lines:
            if "file" not in line:
                continue
            key = session.scalar(select(TryOnResult.storage_key).where(
                TryOnResult.job_id == line["job_id"], TryOnResult.index == line["sample"]))
            try:
                if key is None:
                    raise ObjectNotFoundError(line["file"])
                zf.writestr(f"results/{line['file']}", storage.get(key))
            except ObjectNotFoundError:
                line["file"] = None
        zf.writestr("manifest.jsonl", jsonl(lines))
    return buf.getvalue()
