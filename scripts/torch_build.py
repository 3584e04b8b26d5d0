"""Say which torch build a pip resolution report will install, and roughly how big it is.

Usage: python scripts/torch_build.py REPORT.json   (from ``pip install --dry-run --report``)

Used by scripts/bootstrap.sh before the torch download starts, and by bench/deps_report.py.
Standard library only: it runs before anything is installed. pip's report names the wheels but
not their sizes, so the sizes are the rough figures measured for torch 2.13 on Linux x86-64.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: rough download sizes (GB) of torch 2.13 for Linux x86-64, Python 3.11, measured from pip's
#: "Downloading ... (N MB)" lines: the CPU wheel is 0.19 GB; the index's default Linux wheel is
#: 0.53 GB plus ~2.2 GB of nvidia-*/cuda-* libraries and triton
CPU_GB = 0.2
CUDA_GB = 2.7


def _gpu_requirement(req: str, environment: dict[str, str]) -> bool:
    """True when ``req`` (a Requires-Dist line) is a CUDA library that applies here."""
    name = req.split(";")[0].strip().lower()
    if not name.startswith(("nvidia-", "cuda-toolkit", "triton")):
        return False
    if ";" not in req:
        return True
    try:
        from pip._vendor.packaging.markers import Marker
    except ImportError:  # no pip to evaluate the marker with: assume it applies
        return True
    return bool(Marker(req.split(";", 1)[1]).evaluate({**environment, "extra": ""}))


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Facts about the torch build in a pip ``--report`` document."""
    installs = report.get("install", [])
    names = {item["metadata"]["name"].lower(): item for item in installs}
    torch = names.get("torch")
    nvidia = sorted(n for n in names if n.startswith("nvidia-"))
    facts: dict[str, Any] = {
        "packages": len(installs),
        "torch": torch["metadata"]["version"] if torch else None,
        "nvidia_wheels": len(nvidia),
        "triton": "triton" in names,
    }
    # with --no-deps only torch is resolved: its own requirements tell the build
    gpu_reqs = [
        r
        for r in (torch or {}).get("metadata", {}).get("requires_dist", []) or []
        if _gpu_requirement(r, report.get("environment", {}))
    ]
    if torch is None:
        facts["build"] = "none"
    elif nvidia or gpu_reqs or "+cu" in facts["torch"]:
        facts["build"] = "cuda"
    else:
        facts["build"] = "cpu"
    if torch is not None:
        url = torch.get("download_info", {}).get("url", "")
        facts["source"] = "local file" if url.startswith("file:") else "package index"
    return facts


def describe(facts: dict[str, Any]) -> str:
    if facts["build"] == "none":
        return "    no torch in this resolution"
    if facts["build"] == "cuda":
        extra = " + the nvidia-*/cuda-* libraries and triton"
        return (
            f"    torch {facts['torch']}: CUDA build{extra}, roughly {CUDA_GB:.1f} GB to "
            f"download (from the {facts['source']}). For the CPU build (~{CPU_GB} GB) set "
            "TORCH_INDEX_URL to the PyTorch CPU wheel index (see the README)."
        )
    return (
        f"    torch {facts['torch']}: CPU build, roughly {CPU_GB} GB "
        f"(from the {facts['source']})"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(describe(summarise(json.loads(Path(argv[1]).read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
