#!/usr/bin/env python
"""The training recipes timed as users launch them: ``torchrun scripts/train_grpo.py`` and ``scripts/train_sft.py``
under DeepSpeed ZeRO-2 and ZeRO-3, the project's settings against vanilla TRL, same model, data and prompt shape, in
one run (issue 24). ``python benchmarks/gpu_speed.py --mode recipes ...`` runs this.

For each DeepSpeed stage it launches four runs, each a separate ``torchrun`` of the real entry script:

  grpo_project  scripts/train_grpo.py rollout=fast   FastRollout (compiled decode; ZeRO-3: one gather per rollout,
                                                     stable buffers) + the shared-prompt loss pass, checkpointing off
  grpo_vanilla  scripts/train_grpo.py rollout=trl    TRL's GRPOTrainer as shipped: transformers' generate, one forward
                                                     per completion, gradient checkpointing (GRPOConfig's default)
  sft_project   scripts/train_sft.py                 full fine-tuning, no checkpointing, micro-batch --sft-batch
  sft_vanilla   scripts/train_sft.py                 the same with gradient checkpointing and micro-batch 1 (TRL's
                                                     memory-safe setting, as the 961 tokens/s run was launched)

and reads back each run's results.json (and log_history.json): GRPO step time (median after the first step, which
compiles), the rollout's new tokens/s, SFT tokens/s and MFU (6 N tokens / time / (989 TFLOP/s x GPUs)), peak GPU
memory of rank 0. Everything goes to one JSON (written after every run, so a timeout loses nothing) with every goal
and its ratio:

  GRPO step, project / vanilla, under ZeRO-2 and ZeRO-3     <= 0.25
  rollout new tokens/s at G=8 (7B shape, 12 images 448x448)  >= 1000
  SFT MFU, full fine-tuning of the 3B shape                  >= 0.35

Shapes: ``7b`` (GRPO, 7B-shaped random weights) and ``3b`` (SFT) on GPU; ``tiny`` runs the same launches on CPU with
the tiny model and gloo (a dry run of this script: the figures mean nothing there).

    python benchmarks/gpu_speed.py --mode recipes --shape tiny --out /tmp/recipes.json     # CPU dry run
    python benchmarks/gpu_speed.py --mode recipes --nproc 8 --out docs/gpu/recipes_h200.json  # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEAK_BF16_FLOPS = 989e12  # dense bf16 of an H100/H200 SXM: the MFU denominator
GOALS = {"grpo_step_ratio_max": 0.25, "rollout_new_tokens_per_s_min": 1000.0, "sft_mfu_min": 0.35}

# side of the square images, images per prompt come from the data (5 + 5 references + 2 candidates)
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"grpo_model": "tiny", "sft_model": "tiny", "image_size": 56, "G": 2, "completion": 16, "grpo_batch": 2,
             "steps": 3, "sft_steps": 3, "sft_batch": 2},
    "gpu": {"grpo_model": "7b", "sft_model": "3b", "image_size": 448, "G": 8, "completion": 256, "grpo_batch": 8,
            "steps": 4, "sft_steps": 6, "sft_batch": 4},
}


def _log(t0: float, msg: str) -> None:
    print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)


def env_report() -> dict:
    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                   gpu_mem_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    for mod in ("transformers", "trl", "deepspeed", "accelerate", "peft", "flash_attn", "liger_kernel", "vllm"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # absent (or broken): recorded, never fatal
            out[mod] = None
    return out


def prepare(work: Path, shape: dict, t0: float) -> dict[str, Path]:
    """Synthetic data at the prompt shape, a processor, and the shaped checkpoints (random weights)."""
    data = work / "data"
    side = int(shape["image_size"])
    if not (data / "train" / "grpo.jsonl").is_file():
        cmd = [sys.executable, str(REPO / "scripts" / "make_data.py"), f"out_dir={data}", f"run_dir={work / 'make_data_run'}",
               f"image_size={side}", "users.train_sft=16", "users.train_grpo=8", "users.SP_ID=2", "users.SP_OD=2",
               "users.MP_ID=2", "users.MP_OD=2", "contact_sheets=false", "progress=false"]
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True)
    _log(t0, f"data: {data}")
    from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer, profile_terms
    from preferthinker.data.schema import load_train_jsonl
    from preferthinker.modeling import build_tiny_model

    proc_dir = work / "tiny"
    if not (proc_dir / "config.json").is_file():
        recs = load_train_jsonl(data / "train" / "sft.jsonl")
        build_tiny_model(proc_dir, corpus_for_tokenizer(recs, PromptSpec(style="compact", system="compact")),
                         word_tokens=profile_terms(recs), min_pixels=3136, max_pixels=side * side)
    paths = {"data": data, "tiny": proc_dir}
    for key in ("grpo_model", "sft_model"):
        name = shape[key]
        if name == "tiny":
            paths[key] = proc_dir
            continue
        ckpt = work / f"qwen{name}"
        if not (ckpt / "config.json").is_file():
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_shaped_checkpoint.py"), "--processor-from",
                            str(proc_dir), "--out", str(ckpt), "--shape", name], check=True, cwd=REPO)
        paths[key] = ckpt
    _log(t0, f"checkpoints: {paths['grpo_model']} (GRPO), {paths['sft_model']} (SFT)")
    return paths


def launches(stage: str, paths: dict[str, Path], shape: dict, work: Path) -> dict[str, list[str]]:
    """The override lists of the four runs of one DeepSpeed stage (the same data, model and shape in each pair)."""
    side = int(shape["image_size"])
    common = [f"data.root={paths['data']}", "data.val_samples=0", "data.align_per_record=0", "logger=none", f"deepspeed={stage}",
              "model.build=null", f"model.min_pixels={side * side}", f"model.max_pixels={side * side}", "trainer.logging_steps=1",
              "trainer.save_strategy=no", "prompt.max_refs=5", "resume=false"]
    g = int(shape["G"])
    grpo = [*common, f"model.path={paths['grpo_model']}", "peft=lora", "merge_lora=false", "reward=acc_format",
            f"trainer.max_steps={shape['steps']}", f"trainer.num_generations={g}", f"trainer.per_device_train_batch_size={shape['grpo_batch']}",
            "trainer.gradient_accumulation_steps=1", f"trainer.max_completion_length={shape['completion']}", "trainer.learning_rate=1e-5",
            "trainer.mask_truncated_completions=false"]  # random weights never stop: keep the loss non-trivial
    sft = [*common, f"model.path={paths['sft_model']}", "curriculum=none", "peft=none", f"trainer.max_steps={shape['sft_steps']}",
           "trainer.learning_rate=1e-5", "trainer.warmup_steps=0"]
    return {
        "grpo_project": [*grpo, "rollout=fast", "trainer.gradient_checkpointing=false", f"run_dir={work / stage / 'grpo_project'}"],
        "grpo_vanilla": [*grpo, "rollout=trl", "trainer.gradient_checkpointing=true", f"run_dir={work / stage / 'grpo_vanilla'}"],
        "sft_project": [*sft, "trainer.gradient_checkpointing=false", f"trainer.per_device_train_batch_size={shape['sft_batch']}",
                        f"run_dir={work / stage / 'sft_project'}"],
        "sft_vanilla": [*sft, "trainer.gradient_checkpointing=true", "trainer.per_device_train_batch_size=1",
                        f"run_dir={work / stage / 'sft_vanilla'}"],
    }


def run_one(name: str, overrides: list[str], nproc: int, port: int, timeout_s: float, log_dir: Path, cpu: bool) -> dict:
    """Launch one recipe under torchrun; return what its results.json says (or the error and the log's tail)."""
    script = "train_grpo.py" if name.startswith("grpo") else "train_sft.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
           str(REPO / "scripts" / script), *overrides]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TRL_EXPERIMENTAL_SILENCE": "1"}
    if cpu:
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    run_dir = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")))
    log = log_dir / f"{run_dir.parent.name}_{name}.log"
    t = time.time()
    try:
        with open(log, "w") as fh:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    out: dict[str, Any] = {"wall_s": round(time.time() - t, 1), "rc": rc, "log": str(log)}
    res_file = run_dir / "results.json"
    if rc != 0 or not res_file.is_file():
        out["error"] = log.read_text(errors="replace")[-1500:] if log.is_file() else "no log"
        return out
    res = json.loads(res_file.read_text())
    out["results"] = {k: res.get(k) for k in ("global_step", "train_runtime_s", "tokens", "tokens_per_s", "peak_gpu_gib", "gpu",
                                             "step_time_s", "rollout", "speed", "deepspeed_stage", "samples_per_s")}
    return out


def _n_params(path: Path) -> int:
    from transformers import AutoConfig, AutoModelForImageTextToText

    import torch

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())


def summarize(results: dict, n_sft: int, nproc: int) -> dict:
    """Every goal with its measured value and ratio (None where a run failed or does not report the figure)."""
    out: dict[str, Any] = {"goals": GOALS}
    for stage, runs in results.get("runs", {}).items():
        s: dict[str, Any] = {}

        def res(name: str) -> dict:
            return (runs.get(name) or {}).get("results") or {}

        fast_step = (res("grpo_project").get("step_time_s") or {}).get("median_after_first")
        van_step = (res("grpo_vanilla").get("step_time_s") or {}).get("median_after_first")
        s["grpo_step_s"] = {"project": fast_step, "vanilla": van_step}
        if fast_step and van_step:
            s["grpo_step_ratio"] = round(fast_step / van_step, 4)
            s["grpo_step_goal_met"] = s["grpo_step_ratio"] <= GOALS["grpo_step_ratio_max"]
        tput = ((res("grpo_project").get("rollout") or {}).get("throughput") or {}).get("new_tokens_per_s")
        s["rollout_new_tokens_per_s_rank0"] = tput
        if tput:
            s["rollout_goal_ratio"] = round(tput / GOALS["rollout_new_tokens_per_s_min"], 3)
        for name in ("sft_project", "sft_vanilla"):
            r = res(name)
            if r.get("tokens") and r.get("train_runtime_s"):
                tps = r["tokens"] / r["train_runtime_s"]
                s[name] = {"tokens_per_s": round(tps, 1), "mfu": round(6 * n_sft * tps / (PEAK_BF16_FLOPS * nproc), 4),
                           "speed": r.get("speed")}
        if "sft_project" in s:
            s["sft_mfu_goal_ratio"] = round(s["sft_project"]["mfu"] / GOALS["sft_mfu_min"], 3)
            if "sft_vanilla" in s:
                s["sft_speedup"] = round(s["sft_project"]["tokens_per_s"] / s["sft_vanilla"]["tokens_per_s"], 3)
        s["peak_gpu_gib"] = {name: res(name).get("peak_gpu_gib") for name in runs}
        out[stage] = s
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(os.environ["OUT"]) / "recipes.json" if os.environ.get("OUT") else Path("recipes.json")
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--shape", choices=("tiny", "gpu"), default=None, help="tiny: CPU dry run; gpu: 7B GRPO + 3B SFT (default on CUDA)")
    ap.add_argument("--nproc", type=int, default=None, help="processes per launch (default: GPUs, or 2 on CPU)")
    ap.add_argument("--stages", default="zero2,zero3", help="comma list of DeepSpeed stages")
    ap.add_argument("--runs", default="grpo_project,grpo_vanilla,sft_project,sft_vanilla")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (data, checkpoints, run dirs)")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="per launch")
    ap.add_argument("--budget-s", type=float, default=3000.0, help="no launch starts past this many seconds")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    shape_name = args.shape or ("gpu" if cuda else "tiny")
    if shape_name == "gpu" and not cuda:
        ap.error("--shape gpu needs CUDA; use --shape tiny for the CPU dry run")
    shape = SHAPES[shape_name]
    nproc = args.nproc if args.nproc is not None else (torch.cuda.device_count() if cuda else 2)
    if nproc < 1:
        ap.error(f"--nproc must be >= 1, got {nproc}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ("zero2", "zero3")]
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ("grpo_project", "grpo_vanilla", "sft_project", "sft_vanilla")]
    if bad or unknown:
        ap.error(f"unknown stage(s) {bad} or run(s) {unknown}")
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"recipe_speed_{shape_name}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict[str, Any] = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "shape": shape_name, "shape_settings": shape,
                                        "nproc": nproc, "argv": sys.argv[1:], "dry_run": not cuda},
                               "env": env_report(), "runs": {}}

    def save() -> None:
        results["meta"]["elapsed_s"] = round(time.time() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str))
        tmp.replace(args.out)

    try:
        paths = prepare(work, shape, t0)
    except subprocess.CalledProcessError as e:
        results["error"] = f"prepare failed: {e}; {(e.stderr or '')[-1500:]}"
        save()
        return 1
    n_sft = _n_params(paths["sft_model"])
    results["meta"].update(sft_params=n_sft, grpo_params=_n_params(paths["grpo_model"]))
    save()
    port = 29700
    for stage in stages:
        results["runs"][stage] = {}
        for name, overrides in launches(stage, paths, shape, work).items():
            if name not in wanted:
                continue
            if time.time() - t0 > args.budget_s:
                results["runs"][stage][name] = {"skipped": f"budget of {args.budget_s:.0f}s spent"}
                continue
            _log(t0, f"{stage} {name}: launching")
            port += 1
            r = run_one(name, overrides, nproc, port, args.timeout_s, work, cpu=not cuda)
            results["runs"][stage][name] = r
            _log(t0, f"{stage} {name}: rc={r['rc']} in {r['wall_s']}s")
            results["summary"] = summarize(results, n_sft, nproc)
            save()
    results["summary"] = summarize(results, n_sft, nproc)
    save()
    print("DONE", json.dumps(results["summary"]), flush=True)
    failed = [f"{s}/{n}" for s, runs in results["runs"].items() for n, r in runs.items() if r.get("rc") not in (0, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
