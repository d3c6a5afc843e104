"""Run the stages of the embedded default one after another and tabulate the ablation
(Base < SFT < SFT+RL < SFT+RL+PR, the paper's Table 3 direction) next to the baselines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from preferthinker.data.synthetic.render import MAX_SIZE
from preferthinker.runtime import ConfigError, check, setup_run, write_json

log = logging.getLogger("preferthinker.pipeline")
STAGES = ("data", "sft", "grpo_rl", "grpo_pr", "eval")
RETIRED = ("align_first", "align", "checks", "sft2", "align_detail")  # now phases of configs/curriculum/tiny112.yaml
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _call(script: str, overrides: list[str]) -> None:
    cmd = [sys.executable, str(SCRIPTS / script), *overrides]
    log.info("$ %s", " ".join(cmd[1:]))
    rc = subprocess.call(cmd)
    if rc != 0:
        raise ConfigError(f"stage {script} failed with exit code {rc} (its message is above); finished stages are kept - "
                          f"re-run the same command with run_dir=<this run> to continue")


# Rows of the ablation table, paper order; the eval stage keys SFT+RL as SFT_RL (Hydra keys cannot hold '+')
ABLATION_ROWS = ("Random", "Pixel-statistics baseline", "Base model", "SFT", "SFT_RL", "SFT+RL+PR")


# What each training stage adds, as the issue asks it: (A, B, metric) read as "A - B"
ABLATION_STEPS = (("SFT_RL", "SFT", "accuracy"), ("SFT+RL+PR", "SFT_RL", "pred"), ("SFT+RL+PR", "SFT_RL", "accuracy"),
                  ("SFT+RL+PR", "SFT", "accuracy"))


def _average_diff(results: dict, a: str, b: str, metric: str) -> dict | None:
    """The eval's ``average_comparisons`` entry for A - B (stored under one order; the other is negated)."""
    comps = results.get("average_comparisons") or {}
    if (c := (comps.get(f"{a} - {b}") or {}).get(metric)) is not None:
        return c
    if (c := (comps.get(f"{b} - {a}") or {}).get(metric)) is not None:
        return {**c, "diff": -c["diff"], "ci95": [-c["ci95"][1], -c["ci95"][0]],
                "subsets": {k: -v for k, v in (c.get("subsets") or {}).items()}}
    return None


def ablation_table(results: dict) -> str:
    """Markdown: accuracy % [95 % CI] and profile similarity (Pred) per subset, one row per ablation system; then
    what each stage adds to the average over subsets with a paired, user-clustered bootstrap interval."""
    from preferthinker.evaluation.report import markdown_table, systems_of

    names = {"SFT_RL": "SFT+RL"}
    table = markdown_table(systems_of(results), systems=ABLATION_ROWS, names=names, with_pred=True)
    rows = []
    for a, b, metric in ABLATION_STEPS:
        c = _average_diff(results, a, b, metric)
        if c is None:
            continue
        scale = 100.0 if metric == "accuracy" else 1.0
        lo, hi = (scale * x for x in c["ci95"])
        verdict = "above 0" if lo > 0 else ("below 0" if hi < 0 else "includes 0")
        rows.append(f"| {names.get(a, a)} - {names.get(b, b)} | {'accuracy' if metric == 'accuracy' else 'Pred'} | "
                    f"{scale * c['diff']:+.1f} | [{lo:+.1f}, {hi:+.1f}] | {verdict} |")
    if rows:
        table += ("\n\nWhat each stage adds to the average over subsets (points; paired bootstrap over each subset's "
                  "users, 95 %):\n\n| step | metric | Δ avg | 95% CI | interval |\n|---|---|---:|---:|---|\n" + "\n".join(rows) + "\n")
    return table


def _check_data_size(data_dir: Path, size: int | None) -> None:
    """An existing dataset rendered at another side than ``image_size`` is an error before any stage runs
    (the model would be trained on resampled images, which the renderer's pixel signatures do not survive)."""
    manifest = data_dir / "manifest.json"
    if size is None or not manifest.is_file():
        return
    try:
        made = json.loads(manifest.read_text(encoding="utf-8")).get("image_size")
        made = None if made is None else int(made)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{manifest}: unreadable dataset manifest ({e}); delete {data_dir} to remake the data") from None
    if made is not None and made != size:
        raise ConfigError(f"image_size={size} but {data_dir} was rendered at {made} pixels; pass data_dir=<a new folder> "
                          f"(the data stage makes it there) or image_size={made}")


def timing_table(seconds: dict[str, float]) -> str:
    lines = ["| stage | minutes |", "|---|---:|"] + [f"| {k} | {v / 60:.1f} |" for k, v in seconds.items()]
    return "\n".join(lines + [f"| total | {sum(seconds.values()) / 60:.1f} |"])


def eta_seconds(done: dict[str, float], remaining: list[str], expected: dict) -> float:
    """Seconds left for ``remaining`` stages: their expected minutes (``eta_minutes``), scaled by how long the stages
    finished in this invocation took against their own expectation (a slower or busier machine stretches the rest),
    once they were expected to take 5 minutes or more (a one-minute data stage is no measure of the machine)."""
    exp_done = sum(float(expected.get(s, 0)) * 60 for s in done)
    scale = sum(done.values()) / exp_done if exp_done >= 300 else 1.0
    return scale * sum(float(expected.get(s, 0)) * 60 for s in remaining)


def run(cfg: DictConfig) -> dict:
    for s in cfg.stages:
        check(s not in RETIRED, "stages", list(cfg.stages), f"stage {s!r} is now a phase of the SFT curriculum that the sft stage "
              f"runs (sft_curriculum={cfg.sft_curriculum}: configs/curriculum/); pass sft_curriculum=<name> or sft=[...] overrides")
        check(s in STAGES, "stages", list(cfg.stages), f"unknown stage {s!r}; choose from {STAGES}")
    check(isinstance(cfg.get("eval_base", False), bool), "eval_base", cfg.get("eval_base"), "use true or false")
    curricula = sorted(p.stem for p in (SCRIPTS.parent / "configs" / "curriculum").glob("*.yaml"))
    check(str(cfg.get("sft_curriculum")) in curricula, "sft_curriculum", cfg.get("sft_curriculum"), f"choose one of {curricula} (configs/curriculum/)")
    size = cfg.get("image_size")
    check(size is None or (isinstance(size, int) and not isinstance(size, bool) and 28 <= size <= MAX_SIZE and size % 28 == 0),
          "image_size", size, f"must be null or a multiple of 28 in [28, {MAX_SIZE}] (one Qwen2.5-VL token per 28x28 pixels; "
          "the renderer's largest side)")
    if "data" not in cfg.stages or not list(cfg.make_data):
        _check_data_size(Path(str(cfg.data_dir)), size)
    run_dir = setup_run(cfg, "pipeline")
    d = {name: run_dir / name for name in ("sft", "grpo_rl", "grpo_pr", "eval")}
    # every model stage reads images at the side the data was rendered at (model.min/max_pixels = side^2)
    pixels = [f"model.min_pixels={size * size}", f"model.max_pixels={size * size}"] if size else []
    data = [f"data.root={cfg.data_dir}", *pixels]
    timings: dict[str, float] = {}
    prev = run_dir / "pipeline.json"   # a resumed run keeps the timings of the stages finished before
    earlier = json.loads(prev.read_text()).get("stage_seconds", {}) if prev.is_file() else {}
    expected = dict(cfg.get("eta_minutes") or {})
    sft_final = d["sft"] / "final"   # the curriculum's last phase (a link written by train_sft.py)

    stages = list(cfg.stages)
    for i, stage in enumerate(stages):
        t0 = time.time()
        if stage in d and (d[stage] / "results.json").is_file():
            log.info("stage %s already finished in %s: skipped", stage, d[stage])
            continue
        left = eta_seconds(timings, stages[i:], expected)
        log.info("===== stage %s (%d/%d) ===== ETA for the rest: ~%.0f min (done ~%s)", stage, i + 1, len(stages), left / 60,
                 time.strftime("%H:%M", time.localtime(time.time() + left)))
        if stage == "data":
            if (Path(cfg.data_dir) / "manifest.json").is_file() and not list(cfg.make_data):
                log.info("data already made in %s: skipped (delete it or pass make_data=[...] to remake)", cfg.data_dir)
                continue
            _call("make_data.py", [f"out_dir={cfg.data_dir}", *([f"image_size={size}"] if size else []), *cfg.make_data])
        elif stage == "sft":  # the SFT recipe's curriculum, phase by phase in sft/phases/ (resumable)
            _call("train_sft.py", [f"run_dir={d['sft']}", *data, f"model.path={cfg.tiny_model}", f"curriculum={cfg.sft_curriculum}", *cfg.sft])
        elif stage in ("grpo_rl", "grpo_pr"):
            reward = "acc_format" if stage == "grpo_rl" else "paper"
            _call("train_grpo.py", [f"run_dir={d[stage]}", *data, f"model.path={sft_final}", f"reward={reward}", *cfg.grpo])
        elif stage == "eval":
            # Hydra keys cannot hold '+': the SFT+RL row is keyed SFT_RL and renamed in the table
            extra = [f"+extra_models.{k}={v}" for k, v in (("SFT", sft_final), ("SFT_RL", d["grpo_rl"] / "final")) if (v / "config.json").is_file()]
            main = d["grpo_pr"] / "final"
            base = [f"base_model={cfg.tiny_model}", "systems=[model,base,pixel,random]"] if cfg.get("eval_base") else []
            _call("eval.py", [f"run_dir={d['eval']}", *data, f"model.path={main}", "model_label=SFT+RL+PR", *base, *extra, *cfg.eval])
        timings[stage] = round(time.time() - t0, 1)
        log.info("stage %s took %.1f min\n%s", stage, timings[stage] / 60, timing_table(timings))

    merged = {**earlier, **timings}
    timings = {s: merged[s] for s in stages if s in merged}
    summary = {"run_dir": str(run_dir), "stage_seconds": timings}
    if timings:
        (run_dir / "timing.md").write_text(timing_table(timings) + "\n")
    res_file = d["eval"] / "results.json"
    if res_file.is_file():
        results = json.loads(res_file.read_text())
        table = ablation_table(results)
        if "Base model" not in (results.get("systems") or {}):
            table += (f"\nBase model: not scored (eval_base=false). The untrained backbone ({cfg.tiny_model}) never writes an end "
                      "token or an answer, so its accuracy is 0 by construction (docs/results.md); eval_base=true scores it (~3.5 min).\n")
        (run_dir / "ablation.md").write_text(table)
        summary["ablation_table"] = str(run_dir / "ablation.md")
        print("\nAccuracy (%) with 95 % bootstrap CI over users, and profile similarity Pred (x100), per held-out subset:\n")
        print(table)
    write_json(run_dir / "pipeline.json", summary)
    return summary
