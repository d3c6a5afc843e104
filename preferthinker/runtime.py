"""Run plumbing shared by the entry points: run directory, logging, resolved config, clean errors.

Kept apart from the recipes so `train/sft.py`, `train/grpo.py` and `evaluation/` read as recipes.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("preferthinker")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key, the value and the fix."""


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def run_id() -> str:
    """Run folder name. Multi-process launches must agree on it: $PT_RUN_ID, else the launcher's
    TORCHELASTIC_RUN_ID, else (single process) a timestamp."""
    if os.environ.get("PT_RUN_ID"):
        return os.environ["PT_RUN_ID"]
    if world_size() > 1:
        rid = os.environ.get("TORCHELASTIC_RUN_ID", "")
        if rid and rid != "none":
            return rid
        raise ConfigError(
            "several processes were launched but no shared run directory was given: pass run_dir=<folder> "
            "(or set PT_RUN_ID) so that every rank writes to the same place"
        )
    return _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def register_resolvers() -> None:
    """Register ${run_id:} and the structured schemas for the Hydra configs (idempotent).

    The ``reward`` group's presets start from ``reward/schema``, the ``RewardConfig`` dataclass: every knob
    exists with its one default, so ``reward.prediction.w_img=0.7`` overrides it without Hydra's ``+`` and a
    misspelt key is refused by Hydra, naming it."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from preferthinker.rewards.config import RewardConfig

    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: run_id(), use_cache=True)
    ConfigStore.instance().store(group="reward", name="schema", node=RewardConfig)


def setup_run(cfg: Any, name: str) -> Path:
    """Create the run dir, log to console + <run_dir>/<name>.log on rank 0, save the resolved config."""
    from omegaconf import OmegaConf

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    level = logging.INFO if is_main_process() else logging.WARNING
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger("preferthinker")
    root.setLevel(level)
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if is_main_process():
        fh = logging.FileHandler(run_dir / f"{name}.log")
        fh.setFormatter(fmt)
        root.addHandler(fh)
        (run_dir / f"{name}_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log.info("run directory: %s", run_dir.resolve())
    if _allocator_state:
        log.info("glibc malloc: %s", ", ".join(f"{k}={v}" for k, v in _allocator_state.items()))
    return run_dir


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a crash never leaves half a results file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'your input is wrong' (reported as one paragraph, exit code 2)."""
    from preferthinker.data.schema import SchemaError
    from preferthinker.prompting import ImageLoadError

    errors: list[type[BaseException]] = [ConfigError, SchemaError, ImageLoadError, FileNotFoundError]
    try:
        from preferthinker.modeling import ModelLoadError

        errors.append(ModelLoadError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from omegaconf.errors import OmegaConfBaseException

        errors.append(OmegaConfBaseException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


# glibc's malloc parameters (mallopt(3)) and the values the entry points set. PyTorch's CPU tensors come from malloc:
# with glibc's defaults a block over the (dynamic) mmap threshold is mapped and unmapped on each allocation and the
# heap top is trimmed whenever 2x that threshold lies free, so every training step faults its activation and
# gradient buffers back in page by page. In the tiny default's SFT that was 111,000-150,000 page faults a second and
# 12 % of the CPU time in the kernel, depending on what the process had run before; with these values 14,000-16,000
# and 2 %, about -13 % per `checks` step and -9 % on `align`, same losses to the bit: docs/benchmarks.md,
# "glibc's malloc thresholds".
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
# name -> (mallopt parameter, value, the glibc environment variable that sets the same at process start)
MALLOC_SETTINGS = {
    # glibc's ceiling: blocks under 32 MiB come from the heap
    "mmap_threshold": (_M_MMAP_THRESHOLD, 32 << 20, "MALLOC_MMAP_THRESHOLD_"),
    # keep up to 1 GiB free at the heap top instead of returning it
    "trim_threshold": (_M_TRIM_THRESHOLD, 1 << 30, "MALLOC_TRIM_THRESHOLD_"),
    # grow the heap 256 MiB at a time
    "top_pad": (_M_TOP_PAD, 256 << 20, "MALLOC_TOP_PAD_"),
}
# a user's own allocator choice wins: any of these set means the settings above are left alone
_ALLOCATOR_ENV = (*(env for _, _, env in MALLOC_SETTINGS.values()), "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def tune_allocator() -> dict[str, Any]:
    """Set glibc's malloc thresholds to ``MALLOC_SETTINGS`` (see above) for this process and its forks.

    Skipped, saying why in the returned dict, when ``PT_MALLOC_TUNING=0``, when the user set glibc's own ``MALLOC_*``
    variables or ``GLIBC_TUNABLES``, when jemalloc or tcmalloc is preloaded, or when the C library is not glibc
    (macOS, musl). Numerics are unchanged: only where freed memory goes."""
    import ctypes
    import platform

    if os.environ.get("PT_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return {"applied": False, "reason": "PT_MALLOC_TUNING=0"}
    own = [k for k in _ALLOCATOR_ENV if k in os.environ]
    if own:
        return {"applied": False, "reason": f"the environment sets {', '.join(own)}"}
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload:
        return {"applied": False, "reason": f"LD_PRELOAD={preload}"}
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return {"applied": False, "reason": f"not glibc ({sys.platform}, {platform.libc_ver()[0] or 'unknown libc'})"}
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:  # pragma: no cover - glibc always has both
        return {"applied": False, "reason": f"libc.so.6: {e}"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    failed = [name for name, (param, value, _) in MALLOC_SETTINGS.items() if mallopt(param, value) != 1]
    if failed:
        kept = [name for name in MALLOC_SETTINGS if name not in failed]
        return {"applied": False, "reason": f"mallopt refused {', '.join(failed)} (set: {', '.join(kept) or 'none'})"}
    return {"applied": True, **{name: value for name, (_, value, _) in MALLOC_SETTINGS.items()}}


_allocator_state: dict[str, Any] = {}  # what run_entry's tune_allocator() did; setup_run logs it


def run_entry(fn: Callable[[Any], Any], cfg: Any) -> Any:
    """Call an entry point's ``run(cfg)``: user errors become a one-paragraph message and exit 2;
    anything else keeps its traceback (a bug we want to see). Ctrl-C exits 130. Tunes glibc's allocator first
    (``tune_allocator``)."""
    _allocator_state.clear()
    _allocator_state.update(tune_allocator())
    try:
        result = fn(cfg)
        _close_process_group()
        return result
    except user_errors() as e:
        msg = f"error: {e}"
        log.error(msg) if log.handlers else None
        print(f"\n{msg}\n", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: completed work (checkpoints, scored samples) is kept in the run directory", file=sys.stderr)
        sys.exit(130)
    except Exception:
        log.error("unexpected error:\n%s", traceback.format_exc()) if log.handlers else None
        raise


def _close_process_group() -> None:
    """Destroy the process group a multi-process run formed before the interpreter exits: left to interpreter
    shutdown, gloo's worker threads are torn down still joinable and a rank aborts with "terminate called
    without an active exception" (exit -6) after a run that finished, failing the launch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears down the group while another still writes its results
        dist.destroy_process_group()


def check(cond: bool, key: str, value: Any, fix: str) -> None:
    """Raise ConfigError naming ``key`` and ``value`` with ``fix`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}={value!r}: {fix}")


# --------------------------------------------------------------------------------------------------
# the one checkpoint resolver (GRPO's model.path, eval's model.path, the Assessor's / CLI's --model)

CHECKPOINT_SPECS = ("latest", "latest_sft", "latest_grpo")
# where finished checkpoints live under the outputs root, by kind: plain recipe runs (outputs/<task>/<run>/final) and
# the pipeline's answer-producing stages (outputs/pipeline/<run>/<stage>/final). The pipeline's auxiliary stages
# (align_first, align, checks) are not candidates: they never write a whole response.
CHECKPOINT_GLOBS = {"sft": ("sft/*/final", "pipeline/*/sft/final", "pipeline/*/sft2/final"),
                    "grpo": ("grpo/*/final", "pipeline/*/grpo_rl/final", "pipeline/*/grpo_pr/final")}


def finished_checkpoints(kind: str | None = None, root: str | Path = "outputs") -> list[Path]:
    """Finished ``final/`` folders (holding config.json) of ``kind`` (sft, grpo, or None for both), oldest first
    (by the time config.json was written: the run's last save)."""
    kinds = CHECKPOINT_GLOBS if kind is None else {kind: CHECKPOINT_GLOBS[kind]}
    found = {p.parent for globs in kinds.values() for g in globs for p in Path(root).glob(g + "/config.json")}
    return sorted(found, key=lambda d: ((d / "config.json").stat().st_mtime, str(d)))


def resolve_checkpoint(spec: Any, root: str | Path = "outputs", key: str = "model.path") -> str:
    """``latest`` -> the newest finished SFT or GRPO checkpoint under ``root``; ``latest_sft`` / ``latest_grpo`` -> the newest
    of that kind (see CHECKPOINT_GLOBS); anything else is returned as given (the loader checks the folder). The same rule
    for GRPO (its starting point), eval and the Assessor; the choice is logged. None counts as ``latest``."""
    spec = "latest" if spec is None else str(spec)
    if spec not in CHECKPOINT_SPECS:
        return spec
    kind = None if spec == "latest" else spec.split("_", 1)[1]
    finals = finished_checkpoints(kind, root)
    if not finals:
        globs = [f"{root}/{g}" for k, gs in CHECKPOINT_GLOBS.items() if kind in (None, k) for g in gs]
        what = "SFT or GRPO" if kind is None else kind.upper()
        raise ConfigError(f"{key}={spec}: no finished {what} checkpoint under {root}/ (looked for {', '.join(globs)}). Train one "
                          f"first (python scripts/train_sft.py, or python scripts/run_pipeline.py), or pass the checkpoint folder")
    log.info("%s=%s -> %s (newest of %d finished)", key, spec, finals[-1], len(finals))
    return str(finals[-1])

