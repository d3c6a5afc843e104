"""Run the stages of the embedded default one after another and tabulate the ablation
(Base < SFT < SFT+RL < SFT+RL+PR, the paper's Table 3 direction) next to the baselines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from preferthinker.data.synthetic.render import MAX_SIZE
from preferthinker.runtime import ConfigError, check, setup_run, write_json

log = logging.getLogger("preferthinker.pipeline")
STAGES = ("data", "align_first", "align", "checks", "sft", "sft2", "grpo_rl", "grpo_pr", "eval")
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


def ablation_table(results: dict) -> str:
    """Markdown: accuracy % [95 % CI] and profile similarity (Pred) per subset, one row per ablation system."""
    from preferthinker.evaluation.report import markdown_table, systems_of

    return markdown_table(systems_of(results), systems=ABLATION_ROWS, names={"SFT_RL": "SFT+RL"}, with_pred=True)


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


def _align_first_phases(cfg: DictConfig) -> list[tuple[list[str], list[str]]]:
    """The align_first curriculum as (elements, overrides) per phase; a malformed entry is a ConfigError naming it."""
    from preferthinker.profile import ELEMENTS

    phases = cfg.get("align_first")
    how = ("align_first is a list of phases, each {elements: [...], overrides: [key=value, ...]}, e.g. "
           "\"align_first=[{elements:[Detail],overrides:['trainer.num_train_epochs=3']}]\"; elements from " + str(list(ELEMENTS)))
    check(OmegaConf.is_list(phases) and len(phases) > 0, "align_first", phases, how)
    out = []
    for k, ph in enumerate(phases):
        els = ph.get("elements") if OmegaConf.is_dict(ph) else None
        extra = (ph.get("overrides") or OmegaConf.create([])) if OmegaConf.is_dict(ph) else None
        check(OmegaConf.is_list(els) and len(els) > 0 and all(e in ELEMENTS for e in els), f"align_first[{k}].elements", els, how)
        check(OmegaConf.is_list(extra) and all(isinstance(x, str) and "=" in x for x in extra), f"align_first[{k}].overrides", extra, how)
        out.append(([str(e) for e in els], [str(x) for x in extra]))
    return out


def run(cfg: DictConfig) -> dict:
    for s in cfg.stages:
        check(s != "align_detail", "stages", list(cfg.stages), "stage align_detail is now align_first, a list of phases "
              "(align_first=[{elements:[Detail],overrides:[...]}] is the old stage)")
        check(s in STAGES, "stages", list(cfg.stages), f"unknown stage {s!r}; choose from {STAGES}")
    phases = _align_first_phases(cfg) if "align_first" in cfg.stages else []
    size = cfg.get("image_size")
    check(size is None or (isinstance(size, int) and not isinstance(size, bool) and 28 <= size <= MAX_SIZE and size % 28 == 0),
          "image_size", size, f"must be null or a multiple of 28 in [28, {MAX_SIZE}] (one Qwen2.5-VL token per 28x28 pixels; "
          "the renderer's largest side)")
    if "data" not in cfg.stages or not list(cfg.make_data):
        _check_data_size(Path(str(cfg.data_dir)), size)
    run_dir = setup_run(cfg, "pipeline")
    d = {name: run_dir / name for name in ("align_first", "align", "checks", "sft", "sft2", "grpo_rl", "grpo_pr", "eval")}
    # align_first runs its phases in align_first/phase<k>, each from the previous one's final/; the stage's final/ is the last's
    phase_dirs = [d["align_first"] / f"phase{k + 1}" for k in range(len(phases))]
    # every model stage reads images at the side the data was rendered at (model.min/max_pixels = side^2)
    pixels = [f"model.min_pixels={size * size}", f"model.max_pixels={size * size}"] if size else []
    data = [f"data.root={cfg.data_dir}", *pixels]
    timings = {}

    def start_of(stage: str) -> Path:
        """The checkpoint a pre-training stage starts from: the final/ of the last listed one before it, else the tiny model."""
        before = [s for s in ("align_first", "align", "checks") if s in cfg.stages and STAGES.index(s) < STAGES.index(stage)]
        if not before:
            return Path(str(cfg.tiny_model))
        return (phase_dirs[-1] if before[-1] == "align_first" else d[before[-1]]) / "final"

    def sft_final() -> Path:
        """The SFT checkpoint the later stages use: sft2's when that stage is listed or has run, else sft's."""
        two = d["sft2"] / "final"
        return two if "sft2" in cfg.stages or (two / "config.json").is_file() else d["sft"] / "final"

    for stage in cfg.stages:
        t0 = time.time()
        if stage == "align_first":
            done = all((p / "results.json").is_file() for p in phase_dirs)
        else:
            done = (d[stage] / "results.json").is_file() if stage in d else False
        if done:
            log.info("stage %s already finished in %s: skipped", stage, d[stage])
            continue
        log.info("===== stage %s =====", stage)
        if stage == "data":
            if (Path(cfg.data_dir) / "manifest.json").is_file() and not list(cfg.make_data):
                log.info("data already made in %s: skipped (delete it or pass make_data=[...] to remake)", cfg.data_dir)
                continue
            _call("make_data.py", [f"out_dir={cfg.data_dir}", *([f"image_size={size}"] if size else []), *cfg.make_data])
        elif stage == "align_first":  # vision curriculum: single image -> the terms of some elements alone, before align
            start = start_of(stage)
            for k, ((elements, extra), phase_dir) in enumerate(zip(phases, phase_dirs)):
                if (phase_dir / "results.json").is_file():
                    log.info("align_first phase %d already finished in %s: skipped", k + 1, phase_dir)
                else:
                    _call("train_sft.py", [f"run_dir={phase_dir}", *data, f"model.path={start}", "task_name=align_first",
                                           "data.align_schedule=only", "data.val_samples=0",
                                           "data.align_elements=[" + ",".join(elements) + "]", *extra])
                start = phase_dir / "final"
        elif stage == "align":  # vision alignment (single image -> its five terms) before the CoT SFT
            _call("train_sft.py", [f"run_dir={d['align']}", *data, f"model.path={start_of(stage)}", "task_name=align",
                                   "data.align_schedule=only", "data.val_samples=0", *cfg.align])
        elif stage == "checks":  # text-only drill of the matching step (section notes -> yes/no -> scores)
            _call("train_sft.py", [f"run_dir={d['checks']}", *data, f"model.path={start_of(stage)}", "task_name=checks",
                                   "data.align_schedule=only", "data.align_per_record=0", "data.val_samples=0", *cfg.checks])
        elif stage == "sft":
            _call("train_sft.py", [f"run_dir={d['sft']}", *data, f"model.path={start_of(stage)}", *cfg.sft])
        elif stage == "sft2":  # a second CoT schedule from sft/final (warm restart at a lower learning rate)
            _call("train_sft.py", [f"run_dir={d['sft2']}", *data, f"model.path={d['sft'] / 'final'}", "task_name=sft2", *cfg.sft2])
        elif stage in ("grpo_rl", "grpo_pr"):
            reward = "acc_format" if stage == "grpo_rl" else "paper"
            _call("train_grpo.py", [f"run_dir={d[stage]}", *data, f"model.path={sft_final()}", f"reward={reward}", *cfg.grpo])
        elif stage == "eval":
            # Hydra keys cannot hold '+': the SFT+RL row is keyed SFT_RL and renamed in the table
            extra = [f"+extra_models.{k}={v}" for k, v in (("SFT", sft_final()), ("SFT_RL", d["grpo_rl"] / "final")) if (v / "config.json").is_file()]
            main = d["grpo_pr"] / "final"
            _call("eval.py", [f"run_dir={d['eval']}", *data, f"model.path={main}", "model_label=SFT+RL+PR",
                              f"base_model={cfg.tiny_model}", "systems=[model,base,pixel,random]", *extra, *cfg.eval])
        timings[stage] = round(time.time() - t0, 1)

    summary = {"run_dir": str(run_dir), "stage_seconds": timings}
    res_file = d["eval"] / "results.json"
    if res_file.is_file():
        results = json.loads(res_file.read_text())
        table = ablation_table(results)
        (run_dir / "ablation.md").write_text(table)
        summary["ablation_table"] = str(run_dir / "ablation.md")
        print("\nAccuracy (%) with 95 % bootstrap CI over users, and profile similarity Pred (x100), per held-out subset:\n")
        print(table)
    write_json(run_dir / "pipeline.json", summary)
    return summary
