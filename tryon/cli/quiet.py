"""Keep native libraries' chatter out of the command line's output.

MediaPipe's C++ graph and TF Lite log through absl/glog straight to file descriptor 2, before
and regardless of any Python logging set-up, and ignore ``GLOG_minloglevel`` /
``TF_CPP_MIN_LOG_LEVEL`` (checked with mediapipe 0.10.21). So, at the command line's edge only
(``tryon`` entry point, which ``tryon serve`` and its children go through):

1. the environment variables those libraries do honour are set, for builds that read them;
2. Python's ``absl`` logger is raised to ERROR;
3. file descriptor 2 is routed through a pipe whose reader drops the known informational lines
   (absl/glog ``I``/``W`` records and TF Lite's delegate banner) and passes everything else,
   byte for byte and without waiting for a newline, so progress bars still move. Errors
   (``E``/``F`` records) pass. Child processes inherit the filtered descriptor.

``TRYON_NATIVE_LOGS=1`` turns all of this off (to debug MediaPipe itself).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

#: informational native log lines: absl/glog I/W records, TF Lite's banners
NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+(?:\.\d+)?\s+\d+ [\w./+-]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite \w+ delegate"
    rb"|INFO: Initialized TensorFlow Lite runtime"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)
#: starts of lines that may turn out to be noise once complete: held back until the newline
_MAYBE = re.compile(
    rb"^(?:[IW]\d.*|I|IN|INF|INFO|INFO:.*|W|WA|WAR|WARN|WARNI|WARNIN|WARNING|WARNING:.*)$"
)
_MAX_HELD = 8192
_ENV_FLAG = "TRYON_STDERR_FILTERED"


class LineFilter:
    """Splits a byte stream into lines and drops those matching ``NOISE``.

    ``feed`` returns what may be written now; a fragment that could still become a noise line
    is held back until its newline arrives (or :meth:`flush`).
    """

    def __init__(self, pattern: re.Pattern[bytes] = NOISE) -> None:
        self.pattern = pattern
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        out: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start : nl + 1]
            if not self.pattern.match(line.lstrip(b"\r")):
                out.append(line)
            start = nl + 1
        rest = buf[start:]
        if rest and (len(rest) > _MAX_HELD or not _MAYBE.match(rest.split(b"\r")[-1])):
            out.append(rest)  # a progress bar or a prompt: show it now
            rest = b""
        self.pending = rest
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return b"" if self.pattern.match(rest) else rest


def quiet_native_logs() -> None:
    """Apply the three measures of the module docstring (idempotent, inherited by children)."""
    if os.environ.get("TRYON_NATIVE_LOGS", "") == "1":
        return
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("absl").setLevel(logging.ERROR)
    if os.environ.get(_ENV_FLAG) == "1":
        return  # a parent already filters the descriptor we inherited
    try:
        _filter_fd2()
    except OSError:
        return  # no usable fd 2 (closed, or a platform without pipes): leave it as it is
    os.environ[_ENV_FLAG] = "1"


def _filter_fd2() -> None:
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    lf = LineFilter()

    def pump() -> None:
        while True:
            try:
                data = os.read(read_end, 65536)
            except OSError:
                break
            if not data:
                break
            _write_all(original, lf.feed(data))
        _write_all(original, lf.flush())

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        # put the real stderr back so nothing written at exit is lost, then let the pump drain
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)
        thread.join(timeout=0.5)

    atexit.register(restore)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except OSError:
            return
        data = data[n:]
