"""Peak memory of the Pick-a-Pic benchmark builder on a generated multi-GB export (docs/benchmarks.md).

Writes a Pick-a-Pic v2-shaped export (HF layout ``data/train-NNNNN-of-NNNNN.parquet``, real column names,
JPEG bytes in ``jpg_0``/``jpg_1``, large row groups) of about ``--gb`` GB under ``--work``, runs
``python -m preferthinker.data.pickapic`` on it under ``/usr/bin/time`` and reports the builder's peak RSS
(GNU time's ``%M``: the exec'd builder alone; ``getrusage(RUSAGE_CHILDREN)`` in this process would also count
the RSS a forked child inherits from its parent), the wall time and what was built. The export is generated
in a child process of its own, so this process stays small. The export is deleted
afterwards unless ``--keep``.

Every image is unique (a noise JPEG from a small pool with a unique tail after its end marker, which
decoders ignore), so no pair is dropped as byte-identical and the builder writes every image it selects.

    python benchmarks/pickapic_memory.py --gb 4 --work /tmp/pickapic_bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=4.0, help="export size to generate (GB)")
    ap.add_argument("--work", default="/tmp/pickapic_bench", help="scratch folder (export + output)")
    ap.add_argument("--max-users", type=int, default=None, help="passed to the builder")
    ap.add_argument("--keep", action="store_true", help="keep the export and the output")
    args = ap.parse_args()
    work = Path(args.work)
    export, out = work / "export", work / "out"
    if work.exists():
        shutil.rmtree(work)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.time()
    gen = subprocess.run([sys.executable, "-c", "import json, sys; from pathlib import Path; "
                          "from preferthinker.data.pickapic_fixture import rows_for_size, write_export; "
                          f"print(json.dumps(write_export(Path(sys.argv[1]), rows_for_size({args.gb}))))", str(export)],
                         env=env, capture_output=True, text=True, check=True)
    info = json.loads(gen.stdout.strip().splitlines()[-1])
    info["generate_s"] = round(time.time() - t, 1)
    info["row_group_mb"] = round(info["bytes"] / info["rows"] * info["row_group_rows"] / 1e6)
    print(f"export: {info['bytes'] / 1e9:.2f} GB, {info['rows']} rows, {info['users']} users, {info['shards']} shards, "
          f"row groups of {info['row_group_rows']} rows (~{info['row_group_mb']} MB) in {info['generate_s']} s", flush=True)
    rss_file = work / "peak_rss_kb"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), sys.executable, "-m", "preferthinker.data.pickapic", "--input", str(export), "--out", str(out), "--split", "train"]
    if args.max_users:
        cmd += ["--max-users", str(args.max_users)]
    t = time.time()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t
    peak_kb = int(rss_file.read_text().strip().splitlines()[-1])  # GNU time %M: kilobytes
    print(run.stdout.strip(), run.stderr.strip()[-2000:], sep="\n")
    if run.returncode != 0:
        return run.returncode
    stats = json.loads((out / "data" / "PICKAPIC" / "stats.json").read_text())
    written = sum(f.stat().st_size for f in (out / "data" / "PICKAPIC" / "images").iterdir())
    result = {"export": info, "peak_rss_mb": round(peak_kb / 1024), "wall_s": round(wall, 1), "users": stats["users"],
              "pairs": stats["pairs"], "images_written": stats["images_written"], "images_written_gb": round(written / 1e9, 2),
              "selection_rounds": stats["selection_rounds"]}
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
