"""Batching on the 2-core CPU: the SFT ``cot`` phase's step split (``speed.length_split``) and the evaluation's batch
size (``generation.batch_size``), each timed through the real scripts.

SFT: ``train_sft.py`` with the ``cot`` phase's settings of ``configs/curriculum/tiny56.yaml`` (one alignment row per CoT
row, batch 8) from ``--sft-model`` for ``--sft-steps`` steps, once per split; the trainer's own ``train_runtime``
(model load and row building excluded) and the first logged losses (equal across splits > 1, which draw the same
rows: the split changes the padding, not the update).

Eval: ``eval.py`` on ``--eval-users`` users per split (both A/B orders, the model alone) with ``--eval-model``, once
per batch size; seconds of generation and samples/s from its results.json, and the accuracy (equal across batch sizes:
greedy answers do not depend on the batch).

    python benchmarks/cpu_batching.py --sft-model outputs/pipeline/fresh/sft/phases/3-checks/final \\
        --eval-model outputs/pipeline/fresh/sft/final --out docs/cpu/batching.json

Prints a table and writes the raw figures as JSON; record them in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, overrides: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *overrides], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def sft_split(model: str, data_root: str, steps: int, split: int, run_dir: Path) -> dict:
    _run("train_sft.py", ["curriculum=none", f"run_dir={run_dir}", f"model.path={model}", f"data.root={data_root}", "data.align_per_record=1",
                          "data.val_samples=0", f"trainer.max_steps={steps}", "trainer.save_strategy=no", "trainer.logging_steps=1",
                          f"speed.length_split={split}"])
    hist = json.loads((run_dir / "log_history.json").read_text())
    end = next(e for e in hist if "train_runtime" in e)
    return {"split": split, "steps": steps, "train_runtime_s": round(float(end["train_runtime"]), 2),
            "s_per_step": round(float(end["train_runtime"]) / steps, 3), "first_losses": [float(e["loss"]) for e in hist if "loss" in e][:4]}


def eval_batch(model: str, data_root: str, users: int, batch: int, run_dir: Path, max_new_tokens: int, subsets: str | None) -> dict:
    _run("eval.py", [f"run_dir={run_dir}", f"model.path={model}", f"data.root={data_root}", f"bench.max_samples={users}", "systems=[model]",
                     f"generation.batch_size={batch}", f"generation.max_new_tokens={max_new_tokens}", "metrics.similarity=false",
                     *([f"data.eval_subsets=[{subsets}]"] if subsets else [])])
    res = json.loads((run_dir / "results.json").read_text())
    name = res["system"]
    return {"batch_size": batch, "samples": int(res["errors"][name]["n"]),
            "seconds": res["timing_s"][name], "samples_per_s": res["samples_per_s"][name],
            "accuracy": {k: m["accuracy"] for k, m in res["subsets"].items()}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sft-model", required=True, help="the checkpoint the cot phase starts from (the checks phase's final/)")
    ap.add_argument("--eval-model", required=True, help="a trained checkpoint to evaluate (the SFT's final/)")
    ap.add_argument("--data-root", default="data/synthetic")
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--splits", default="1,2,4,8")
    ap.add_argument("--eval-users", type=int, default=50, help="users per held-out split (x2 orders x4 splits samples)")
    ap.add_argument("--batch-sizes", default="16,64,128")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="the eval's cap (512, its default)")
    ap.add_argument("--subsets", default=None, help="comma-separated held-out splits (default: the data config's four)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    for p in (args.sft_model, args.eval_model, args.data_root):
        if not Path(p).exists():
            raise SystemExit(f"{p}: not found")
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": None},
           "date": time.strftime("%Y-%m-%d"), "sft": [], "eval": []}
    import torch

    out["machine"]["torch_threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        for split in (int(s) for s in args.splits.split(",")):
            r = sft_split(args.sft_model, args.data_root, args.sft_steps, split, Path(tmp) / f"sft{split}")
            out["sft"].append(r)
            print(f"sft length_split={split}: {r['train_runtime_s']} s for {args.sft_steps} steps ({r['s_per_step']} s/step), "
                  f"losses {[round(x, 4) for x in r['first_losses']]}", flush=True)
        for b in (int(s) for s in args.batch_sizes.split(",")):
            r = eval_batch(args.eval_model, args.data_root, args.eval_users, b, Path(tmp) / f"eval{b}", args.max_new_tokens, args.subsets)
            out["eval"].append(r)
            print(f"eval batch_size={b}: {r['samples']} samples in {r['seconds']} s ({r['samples_per_s']} samples/s), "
                  f"accuracy {r['accuracy']}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
