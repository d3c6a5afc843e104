"""Benchmark of the data engine: images/s and peak memory of making one split.

    python -m preferthinker.data.synthetic.bench --split train_sft --users 1000 --workers 2
    python -m preferthinker.data.synthetic.bench --split train_sft --users 10000 --workers 2

Every other split gets one user. Peak memory is the largest sum of resident memory over the main
process and its workers, sampled every 50 ms (psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

from preferthinker.data.synthetic.splits import ALL_SPLITS, make_dataset


def _tree_rss() -> tuple[int, int]:
    import psutil

    me = psutil.Process(os.getpid())
    main = me.memory_info().rss
    total = main
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return main, total


def run(split: str, users: int, workers: int, image_size: int = 56, verbosity: str = "terse", out_dir: str | None = None, keep: bool = False) -> dict:
    tmp = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="pt_bench_"))
    cfg = {
        "out_dir": str(tmp),
        "seed": 0,
        "image_size": image_size,
        "users": {s: (users if s == split else 1) for s in ALL_SPLITS},
        "workers": workers,
        "verbosity": verbosity,
        "progress": False,
        "contact_sheets": False,
    }
    peak = {"main": 0, "total": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            m, t = _tree_rss()
            peak["main"], peak["total"] = max(peak["main"], m), max(peak["total"], t)
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    stats = make_dataset(cfg)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    size_mb = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 2**20
    if not keep and not out_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "split": split,
        "users": users,
        "images": stats["timing"]["images"],
        "workers": workers,
        "image_size": image_size,
        "verbosity": verbosity,
        "wall_s": round(wall, 1),
        "generate_s": stats["timing"]["generate_s"],
        "images_per_s": round(stats["timing"]["images"] / wall, 1),
        "peak_rss_total_mb": round(peak["total"] / 2**20, 1),
        "peak_rss_main_mb": round(peak["main"] / 2**20, 1),
        "disk_mb": round(size_mb, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train_sft", choices=ALL_SPLITS)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--verbosity", default="terse")
    ap.add_argument("--out-dir", default=None, help="write here (kept) instead of a temporary folder")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.split, args.users, args.workers, args.image_size, args.verbosity, args.out_dir), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
