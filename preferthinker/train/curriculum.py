"""The SFT recipe's curriculum: phases declared in ``configs/curriculum/<name>.yaml``, run one after another by
``train_sft.py`` inside one run directory.

Each phase is a whole SFT run (``train/sft.run_phase``; or, with ``kind: vision_heads``, the vision tower trained alone
with one linear head per element, ``train/vision_heads.py``) in ``<run_dir>/phases/<k>-<name>/`` with the command's
configuration plus the phase's ``set`` (nested keys, e.g. ``{data: {align_schedule: only}, trainer: {num_train_epochs: 2}}``),
starting from the previous phase's ``final/`` (the first from ``model.path``). ``<run_dir>/final`` points at the last
phase's ``final/``, so GRPO, eval and the assessor find the curriculum like any SFT run, and ``results.json`` carries
the last phase's results plus a ``curriculum`` table (phase, seconds, steps, loss).

Resuming (``resume=auto``, the default) skips the phases that finished (their ``results.json`` and ``final/`` exist)
and continues an interrupted phase from its newest checkpoint; ``resume=false`` retrains every phase."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from preferthinker.runtime import ConfigError, is_main_process, setup_run, write_json

log = logging.getLogger("preferthinker.sft")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
KINDS = ("sft", "vision_heads")


@dataclass(frozen=True)
class Phase:
    name: str
    settings: dict[str, Any]   # dotted key -> value
    kind: str = "sft"          # sft: an SFT run (train/sft.run_phase) | vision_heads: the vision tower alone (train/vision_heads.py)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if OmegaConf.is_dict(node):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: OmegaConf.to_container(node) if OmegaConf.is_config(node) else node}


def phases_of(cfg: DictConfig) -> list[Phase]:
    """The curriculum's phases; a malformed one, or one that sets a key the SFT config does not have, is a
    ConfigError naming it (``trainer.*`` may add any SFTConfig field, as on the command line with ``+``)."""
    cur = cfg.get("curriculum")
    raw = cur.get("phases") if cur is not None else None
    if raw is None or (OmegaConf.is_list(raw) and len(raw) == 0):
        return []
    how = ("curriculum.phases is a list of {name: <letters, digits, _>, kind: sft | vision_heads (default sft), "
           "set: {<section>: {<key>: <value>}}} "
           "(configs/curriculum/tiny56.yaml shows the form); curriculum=none trains one phase")
    if not OmegaConf.is_list(raw):
        raise ConfigError(f"curriculum.phases={raw!r}: {how}")
    phases, seen = [], set()
    for k, ph in enumerate(raw):
        name = ph.get("name") if OmegaConf.is_dict(ph) else None
        if not isinstance(name, str) or not _NAME.match(name) or name in seen:
            raise ConfigError(f"curriculum.phases[{k}].name={name!r}: {how}; names must be unique")
        seen.add(name)
        kind = ph.get("kind", "sft")
        if kind not in KINDS:
            raise ConfigError(f"curriculum.phases[{k}] ({name}).kind={kind!r}: choose one of {list(KINDS)}")
        body = ph.get("set")
        if body is not None and not OmegaConf.is_dict(body):
            raise ConfigError(f"curriculum.phases[{k}] ({name}).set={body!r}: {how}")
        settings = _flatten(body) if body is not None else {}
        for key in settings:
            if key.split(".")[0] in ("curriculum", "run_dir", "resume") or key == "model.path":
                raise ConfigError(f"curriculum phase {name!r} sets {key}: the curriculum chooses it (each phase starts from the "
                                  "previous one's final/ in <run_dir>/phases/)")
            if not key.startswith("trainer.") and OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"curriculum phase {name!r} sets {key}, which the SFT config does not have "
                                  f"(configs/sft.yaml and its groups list the keys)")
        phases.append(Phase(name, settings, kind))
    return phases


def phase_config(cfg: DictConfig, phase: Phase, run_dir: Path, start: str) -> DictConfig:
    """The command's configuration with the phase's settings, its own run directory and starting checkpoint."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.curriculum.phases = []
    for key, value in phase.settings.items():
        OmegaConf.update(out, key, value, merge=False, force_add=key.startswith("trainer."))
    out.run_dir = str(run_dir)
    out.model.path = str(start)
    out.task_name = f"sft/{phase.name}"
    return out


def finished(phase_dir: Path) -> bool:
    return (phase_dir / "results.json").is_file() and (phase_dir / "final" / "config.json").is_file()


def link_final(run_dir: Path, target: Path) -> Path:
    """``<run_dir>/final`` -> the last phase's final/ (a relative link; replaced when it exists)."""
    final = run_dir / "final"
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.is_dir():
        raise ConfigError(f"{final} is a folder from a run without a curriculum; pass a new run_dir=")
    os.symlink(os.path.relpath(target, run_dir), final, target_is_directory=True)
    return final


def timing_table(rows: list[dict]) -> str:
    lines = ["| phase | minutes | steps | train loss | |", "|---|---:|---:|---:|---|"]
    for r in rows:
        loss = "" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        lines.append(f"| {r['phase']} | {r['seconds'] / 60:.1f} | {r.get('global_step', '')} | {loss} | "
                     f"{'finished earlier, skipped' if r['skipped'] else ''} |")
    lines.append(f"| total | {sum(r['seconds'] for r in rows) / 60:.1f} | | | |")
    return "\n".join(lines)


def phase_dir_of(run_dir: Path, k: int, phase: Phase) -> Path:
    """``<run_dir>/phases/<k+1>-<name>``: where the ``k``-th phase (from 0) trains and leaves its final/."""
    return run_dir / "phases" / f"{k + 1}-{phase.name}"


def _validate_phases(cfg: DictConfig, phases: list[Phase], run_dir: Path, start: str) -> None:
    """Check every SFT phase's configuration before the first phase trains, so that a command-line setting a later
    phase's own settings contradict (``vision_learning_rate`` with a phase that freezes the tower, ...) fails in
    seconds instead of after the earlier phases, naming the phase and the keys it sets."""
    from preferthinker.train.common import validate_common

    name = cfg.curriculum.get("name") or "<name>"
    for k, phase in enumerate(phases):
        if phase.kind != "sft":
            continue
        try:
            validate_common(phase_config(cfg, phase, phase_dir_of(run_dir, k, phase), start))
        except ConfigError as e:
            raise ConfigError(f"curriculum {name} phase {k + 1} ({phase.name}), which sets "
                              f"{', '.join(phase.settings) or 'nothing'}: {e} (a phase's own settings win over the command "
                              f"line: to change them, pass a copy of configs/curriculum/{name}.yaml "
                              "edited, or curriculum=none for one phase)") from None


def run_curriculum(cfg: DictConfig, phases: list[Phase], train_phase: Callable[[DictConfig], dict]) -> dict:
    """Run ``phases`` in order through ``train_phase`` (the one-phase SFT recipe); see the module docstring."""
    import json

    if cfg.curriculum.get("tiny_only") and cfg.model.get("build") is None:
        raise ConfigError(f"curriculum={cfg.curriculum.get('name', '?')} is tuned for the tiny embedded default (its phases "
                          "train a from-scratch ViT on synthetic rows); with real weights pass curriculum=none")
    resume = cfg.get("resume", "auto")
    fresh = resume is False or str(resume).lower() == "false"
    if not fresh and resume not in ("auto", None):
        raise ConfigError(f"resume={resume}: a curriculum resumes phase by phase (resume=auto) or starts over (resume=false); "
                          "to continue one phase from a checkpoint folder run it alone with curriculum=none")
    start = str(cfg.model.path)
    _validate_phases(cfg, phases, Path(str(cfg.run_dir)), start)
    run_dir = setup_run(cfg, "sft")
    rows: list[dict] = []
    results: dict = {}
    log.info("curriculum %s: %s", cfg.curriculum.get("name", ""), " -> ".join(p.name for p in phases))
    for k, phase in enumerate(phases):
        phase_dir = phase_dir_of(run_dir, k, phase)
        skipped = not fresh and finished(phase_dir)
        t0 = time.time()
        if skipped:
            log.info("phase %d/%d %s already finished in %s: skipped", k + 1, len(phases), phase.name, phase_dir)
            results = json.loads((phase_dir / "results.json").read_text(encoding="utf-8"))
        else:
            log.info("===== phase %d/%d: %s (from %s) =====", k + 1, len(phases), phase.name, start)
            if phase.kind == "vision_heads":
                from preferthinker.train.vision_heads import run_phase as train_vision

                results = train_vision(phase_config(cfg, phase, phase_dir, start))
            else:
                results = train_phase(phase_config(cfg, phase, phase_dir, start))
            setup_run(cfg, "sft")  # the phase logged into its own folder; back to the run's log
        rows.append({"phase": phase.name, "run_dir": str(phase_dir), "skipped": skipped,
                     "seconds": round(float(results.get("train_runtime_s", 0.0)) if skipped else time.time() - t0, 1),
                     "global_step": results.get("global_step"), "train_loss": results.get("train_loss")})
        start = str(phase_dir / "final")
    out = dict(results)
    out.update(stage="sft", phases_final_model=results.get("final_model"), curriculum=rows,
               curriculum_name=cfg.curriculum.get("name"), curriculum_seconds=round(sum(r["seconds"] for r in rows), 1))
    if is_main_process():
        out["final_model"] = str(link_final(run_dir, Path(start)))
        write_json(run_dir / "results.json", out)
        table = timing_table(rows)
        (run_dir / "curriculum.md").write_text(table + "\n", encoding="utf-8")
        log.info("curriculum done, final model %s\n%s", out["final_model"], table)
    return out
