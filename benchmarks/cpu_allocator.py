"""glibc's malloc thresholds on the 2-core CPU: the default SFT (``train_sft.py``, the tiny56 curriculum) run as users
run it, one process through its phases, once per arm: glibc's defaults (``PT_MALLOC_TUNING=0``), the thresholds every
entry point sets (``runtime.MALLOC_SETTINGS``) and the same values as glibc environment variables; each stopped
``--checks-steps`` steps into the ``checks`` phase.

Per arm: the ``vit`` and ``align`` phases' trainer seconds (their results.json), the ``checks`` phase's seconds per step
between steps 10 and ``--checks-steps`` (TensorBoard wall times), and over that same stretch the process's minor page
faults per second and the share of its CPU time spent in the kernel (``/proc/<pid>/stat``); the peak resident memory
(``VmHWM``) and the first ``checks`` losses (equal in every arm: the thresholds move memory, not numbers).

    python benchmarks/cpu_allocator.py --out docs/cpu/allocator.json      # ~22 min on 2 cores

The slowdown it measures depends on the process's history (what it allocated before), so only the one-process run
shows it; a phase started alone from a checkpoint may not. Keep the machine otherwise idle while it runs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
# glibc_default: PT_MALLOC_TUNING=0; tuned: what the entry points do (mallopt once the process runs); tuned_env: the
# same values as glibc's MALLOC_* environment variables, in force from the process's first allocation
ARMS = ("glibc_default", "tuned", "tuned_env")


def _proc(pid: int) -> dict:
    """Minor faults and user/system CPU seconds of ``pid`` (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")": state is field 3 of stat(5); minflt is field 10, utime 14, stime 15
    return {"t": time.time(), "minflt": int(fields[7]), "user_s": int(fields[11]) / TICK, "sys_s": int(fields[12]) / TICK}


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _tb_steps(phase_dir: Path) -> dict[int, tuple[float, float]]:
    """step -> (wall time, train loss) from the phase's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[int, tuple[float, float]] = {}
    for f in glob.glob(str(phase_dir / "tb" / "**" / "events*"), recursive=True):
        acc = EventAccumulator(f)
        acc.Reload()
        if "train/loss" in acc.Tags()["scalars"]:
            out.update({e.step: (e.wall_time, e.value) for e in acc.Scalars("train/loss")})
    return out


def run_arm(arm: str, run_dir: Path, checks_steps: int, data_root: str, timeout_s: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    env["PT_MALLOC_TUNING"] = "0" if arm == "glibc_default" else "1"
    if arm == "tuned_env":  # the same values as glibc environment variables, read when the process starts
        from preferthinker.runtime import MALLOC_SETTINGS

        env.update({name: str(value) for _, value, name in MALLOC_SETTINGS.values()})
    cmd = [sys.executable, str(REPO / "scripts" / "train_sft.py"), f"run_dir={run_dir}", f"data.root={data_root}"]
    log = open(run_dir.parent / f"{arm}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    checks = run_dir / "phases" / "3-checks"
    start = end = None
    t0 = time.time()
    try:
        while end is None:
            time.sleep(2)
            if proc.poll() is not None:
                raise SystemExit(f"{arm}: train_sft.py exited with {proc.returncode} before checks step {checks_steps}; "
                                 f"see {log.name}")
            if time.time() - t0 > timeout_s:
                raise SystemExit(f"{arm}: no checks step {checks_steps} after {timeout_s:.0f} s; see {log.name}")
            steps = _tb_steps(checks) if (checks / "tb").exists() else {}
            last = max(steps, default=0)
            if start is None and last >= 10:
                start = (_proc(proc.pid), steps)
            elif start is not None and last >= checks_steps:
                end = (_proc(proc.pid), steps)
        peak = _peak_rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        log.close()
    (p0, s0), (p1, s1) = start, end
    lo, hi = max(s0), max(s1)  # the stretch the /proc samples cover (the tb steps logged when each was taken)
    wall = p1["t"] - p0["t"]
    cpu = (p1["user_s"] - p0["user_s"]) + (p1["sys_s"] - p0["sys_s"])
    phase = lambda k, name: json.loads((run_dir / "phases" / f"{k}-{name}" / "results.json").read_text())["train_runtime_s"]  # noqa: E731
    return {
        "arm": arm,
        "vit_s": phase(1, "vit"),
        "align_s": phase(2, "align"),
        "checks_s_per_step": round((s1[hi][0] - s1[10][0]) / (hi - 10), 3),
        "checks_steps_measured": [10, hi],
        "minor_faults_per_s": round((p1["minflt"] - p0["minflt"]) / wall),
        "kernel_share_of_cpu": round((p1["sys_s"] - p0["sys_s"]) / cpu, 3) if cpu else None,
        "cores_busy": round(cpu / wall, 2),
        "peak_rss_mb": peak,
        "checks_losses": [round(s1[k][1], 6) for k in sorted(s1)[:5]],
        "sampled_steps": [lo, hi],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checks-steps", type=int, default=200)
    ap.add_argument("--data-root", default="data/synthetic")
    ap.add_argument("--arms", default="glibc_default,tuned,tuned_env", help="comma-separated, run in this order")
    ap.add_argument("--timeout-s", type=float, default=1800)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.checks_steps < 20:
        raise SystemExit(f"--checks-steps={args.checks_steps}: at least 20 (the stretch starts at step 10)")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise SystemExit(f"--arms: unknown {bad}; the arms are {', '.join(ARMS)}")
    if not (REPO / args.data_root / "manifest.json").exists():
        raise SystemExit(f"--data-root={args.data_root}: no manifest.json there; run scripts/make_data.py first")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pt_alloc_") as tmp:
        for arm in arms:
            rows.append(run_arm(arm, Path(tmp) / arm, args.checks_steps, args.data_root, args.timeout_s))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| arm | vit s | align s | checks s/step | page faults/s | kernel share of CPU | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {r['vit_s']} | {r['align_s']} | {r['checks_s_per_step']} | {r['minor_faults_per_s']:,} | "
              f"{r['kernel_share_of_cpu']:.1%} | {r['peak_rss_mb']:,} |")
    differ = [r["arm"] for r in rows[1:] if r["checks_losses"] != rows[0]["checks_losses"]]
    if differ:
        print(f"warning: the first checks losses of {', '.join(differ)} differ from {rows[0]['arm']}'s:",
              {r["arm"]: r["checks_losses"] for r in rows})
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
                                   "python": platform.python_version(), "glibc": platform.libc_ver()[1],
                                   "checks_steps": args.checks_steps, "rows": rows}, indent=2))
        print("wrote", out)


if __name__ == "__main__":
    main()
