"""What each install of tryon resolves to from the public package index, without installing.

    .venv/bin/python bench/deps_report.py [--out reports/deps] [SET ...]

For each dependency set (core, api, worker, worker+engine, train, all) it runs
``pip install --isolated --dry-run --ignore-installed --report R.json SPEC`` from the repository
root: ``--isolated`` ignores pip's configuration files and PIP_* variables, so a machine with a
local torch wheel sees what a user's machine gets. It prints one line per set: the number of
packages, whether torch is in and which build, how many nvidia-*/cuda-* wheels, and the download
size summed from pip's "Downloading/Using cached NAME (SIZE)" lines (the JSON report itself has
no sizes). mediapipe (installed with --no-deps by scripts/bootstrap.sh and the Dockerfile) adds
one wheel to every set; it is counted separately. Needs the package index to be reachable.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from torch_build import summarise  # noqa: E402

SETS: dict[str, list[str]] = {
    "core": ["."],
    "api": [".[api]"],
    "worker (cpu queue)": [".[worker]"],
    "worker + engine (gpu queue)": ["torch==2.13.0", ".[worker,engine]"],
    "train": ["torch==2.13.0", ".[train]"],
    "all (README commands)": ["torch==2.13.0", ".[all]"],
    "mediapipe --no-deps": ["--no-deps", "mediapipe==0.10.21"],
}
_SIZE = re.compile(r"(?:Downloading|Using cached) (\S+) \(([\d.]+) (kB|MB|GB)\)")
_UNIT = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}


def resolve(specs: list[str], report: Path) -> tuple[dict, float, int]:
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run",
           "--ignore-installed", "--progress-bar", "off", "--report", str(report), *specs]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"pip failed for {specs}:\n{proc.stderr[-2000:]}")
    sizes: dict[str, float] = {}
    for name, value, unit in _SIZE.findall(proc.stdout):
        sizes[name] = float(value) * _UNIT[unit]
    return json.loads(report.read_text()), sum(sizes.values()), len(sizes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "deps")
    parser.add_argument("sets", nargs="*", help=f"subset of: {', '.join(SETS)}")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'install':30} {'packages':>8}  {'torch':22} {'nvidia/cuda wheels':>18} {'download':>10}")
    for label, specs in SETS.items():
        if args.sets and label not in args.sets:
            continue
        slug = re.sub(r"\W+", "-", label).strip("-")
        data, mb, sized = resolve(specs, args.out / f"{slug}.json")
        facts = summarise(data)
        names = [i["metadata"]["name"].lower() for i in data["install"]]
        cuda = sum(n.startswith(("nvidia-", "cuda-")) for n in names)
        torch = f"{facts['torch']} ({facts['build']})" if facts["torch"] else "no"
        heavy = [n for n in ("diffusers", "transformers", "accelerate") if n in names]
        note = f"  + {', '.join(heavy)}" if heavy else ""
        size = f"{mb / 1e3:.2f} GB" if sized else "n/a"
        print(f"{label:30} {len(names):>8}  {torch:22} {cuda:>18} {size:>10}{note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
