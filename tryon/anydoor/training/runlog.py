"""The metrics of a training run: ``train_log.jsonl`` and, optionally, TensorBoard.

A run that resumes from the checkpoint at step ``k`` repeats the steps after ``k`` that a
crashed or interrupted run had already logged. :class:`RunLog` therefore starts by cutting
the history back to ``k``: it rewrites ``train_log.jsonl`` without the lines of steps
``> k`` and opens TensorBoard with ``purge_step = k + 1``, so TensorBoard drops the older
events of those steps too. Each step then appears once in both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOG_FILENAME = "train_log.jsonl"


def truncate_log(path: Path, last_step: int) -> int:
    """Drop the lines of ``path`` whose ``step`` is above ``last_step``; returns how many.

    The file is replaced atomically; unreadable lines (a write cut short by a crash) go too.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    return dropped


class RunLog:
    """Append metrics per step to ``output_dir/train_log.jsonl`` (and TensorBoard).

    ``start_step``: the step this run starts from (0, or the resumed checkpoint's step);
    everything logged earlier for later steps is removed (see the module docstring).
    """

    def __init__(self, output_dir: Path, *, start_step: int, tensorboard: bool) -> None:
        self.path = output_dir / LOG_FILENAME
        output_dir.mkdir(parents=True, exist_ok=True)
        self.dropped = truncate_log(self.path, start_step)
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(output_dir / "tensorboard"), purge_step=start_step + 1
            )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


__all__ = ["LOG_FILENAME", "RunLog", "truncate_log"]
