"""Trainer plumbing shared by the SFT and GRPO recipes: config checks common to both, the backbone (the tiny
default is built on first use), TrainingArguments fields from the config groups, resume, saving the final HF
directory, the distributed / throughput reports, fault injection for the resume tests and learning-curve plots.

The recipes (``train/sft.py``, ``train/grpo.py``) import from here and read top to bottom; neither imports the other.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from preferthinker.data.refs import RefDraw, parse_ref_draw
from preferthinker.runtime import ConfigError, check, is_main_process, write_json

log = logging.getLogger("preferthinker.train")


def ref_draw(cfg: DictConfig) -> RefDraw | None:
    """``data.refs_per_side``, ``data.refs_paired`` and ``data.refs_cover_profiles`` as a RefDraw (None: every reference up to prompt.max_refs); a bad value is a
    ConfigError naming the key (see preferthinker/data/refs.py for the forms)."""
    value = cfg.data.get("refs_per_side")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    try:
        return parse_ref_draw(value, cfg.data.get("refs_paired", False), cfg.data.get("refs_cover_profiles", False))
    except ValueError as e:
        raise ConfigError(f"{e}. Use null (all references), an int or a list such as [1, 2, 3, 5]; refs_paired and "
                          "refs_cover_profiles true or false") from None


def validate_common(cfg: DictConfig) -> None:
    """Fail early on settings that cannot work, naming the key and the fix."""
    ref_draw(cfg)
    check(cfg.prompt.style in ("official", "compact"), "prompt.style", cfg.prompt.style, "choose official or compact")
    check(cfg.prompt.system in ("official", "compact", "none", None), "prompt.system", cfg.prompt.system, "choose official, compact or none")
    check(1 <= int(cfg.prompt.max_refs) <= 64, "prompt.max_refs", cfg.prompt.max_refs, "use 1..64 references per side (official: 5)")
    check(28 * 28 <= int(cfg.model.min_pixels) <= int(cfg.model.max_pixels) <= 4096 * 4096, "model.min_pixels/max_pixels",
          (cfg.model.min_pixels, cfg.model.max_pixels), "need 784 <= min_pixels <= max_pixels <= 16.7M")
    check(cfg.resume in ("auto", False, None, "false") or Path(str(cfg.resume)).is_dir(), "resume", cfg.resume,
          "use auto, false, or an existing checkpoint-N folder")
    if cfg.get("max_length") is not None:
        check(int(cfg.max_length) > 0, "max_length", cfg.max_length, "use a positive token count or null")
    t = cfg.trainer
    check(int(t.per_device_train_batch_size) >= 1, "trainer.per_device_train_batch_size", t.per_device_train_batch_size, "use >= 1")
    check(float(t.learning_rate) > 0, "trainer.learning_rate", t.learning_rate, "use a positive learning rate")
    if cfg.get("vision_learning_rate") is not None:
        vlr = cfg.vision_learning_rate
        try:
            ok = not isinstance(vlr, bool) and float(vlr) > 0
        except (TypeError, ValueError):
            ok = False
        check(ok, "vision_learning_rate", vlr,
              "use a positive learning rate for the vision tower, or null for trainer.learning_rate")
        check(not cfg.model.get("freeze_vision"), "vision_learning_rate", vlr,
              "model.freeze_vision=true leaves the vision tower untrained; drop one of the two")
    check(str(cfg.data.get("align_schedule") or "mixed") in ("mixed", "first", "only"), "data.align_schedule", cfg.data.get("align_schedule"),
          "choose mixed (auxiliary rows shuffled among the CoT rows), first (all auxiliary rows, then the CoT rows) or only "
          "(auxiliary rows alone: a vision-alignment or check-drill stage)")
    n_align, n_check = int(cfg.data.get("align_per_record") or 0), int(cfg.data.get("check_per_record") or 0)
    check(0 <= n_align <= 64, "data.align_per_record", n_align, "use 0..64 single-image rows per record")
    check(0 <= n_check <= 64, "data.check_per_record", n_check, "use 0..64 check rows per record (a response has 5 sections)")
    from preferthinker.data.loading import CHECK_CANDIDATES, CHECK_CONTEXTS

    check(str(cfg.data.get("check_candidates") or "data") in CHECK_CANDIDATES, "data.check_candidates", cfg.data.get("check_candidates"),
          "choose data (sections of the records' own responses) or uniform (candidate terms drawn uniformly)")
    check(str(cfg.data.get("check_context") or "none") in CHECK_CONTEXTS, "data.check_context", cfg.data.get("check_context"),
          "choose none (the check prompt alone) or profile (the record's profile blocks and the section heading before the note)")
    elements = cfg.data.get("align_elements")
    if elements is not None:
        from preferthinker.profile import ELEMENTS

        check(OmegaConf.is_list(elements) and len(elements) > 0 and all(e in ELEMENTS for e in elements), "data.align_elements",
              elements, f"use null (all five) or a list of profile elements, e.g. [Detail]; choose from {list(ELEMENTS)}")
    n_read = int(cfg.data.get("read_per_record") or 0)
    check(n_read in (0, 1, 2), "data.read_per_record", cfg.data.get("read_per_record"),
          "use 0 (off), 1 (one candidate-reading row per record) or 2 (also with the candidates swapped)")
    if str(cfg.data.get("align_schedule") or "mixed") == "only":
        check(n_align + n_check + n_read > 0 or bool(cfg.data.get("total_rows")), "data.align_per_record", cfg.data.get("align_per_record"),
              "data.align_schedule=only trains on auxiliary rows alone: set data.align_per_record, data.check_per_record "
              "or data.read_per_record >= 1, or data.total_rows=true")


def resolve_precision(bf16: Any) -> bool:
    import torch

    if bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if bf16 and not torch.cuda.is_available():
        raise ConfigError("trainer.bf16=true needs a CUDA device; use trainer.bf16=auto on CPU")
    return bool(bf16)


def sft_records(cfg: DictConfig) -> tuple[Path, Path, list, str]:
    """The SFT recipe's records: ``(data.train_sft, its image root, the records up to data.max_samples, the detected form)``;
    a missing file is a ConfigError naming the key and how to make it."""
    from preferthinker.data.loading import image_root_for
    from preferthinker.data.sft_formats import load_sft_records

    train_path = Path(str(cfg.data.train_sft))
    if not train_path.is_file():
        raise ConfigError(f"data.train_sft={train_path}: file does not exist. Make the synthetic data with "
                          f"`python scripts/make_data.py`, or point data.train_sft at an official-schema JSONL")
    image_root = image_root_for(train_path, cfg.data.image_root)
    records, form = load_sft_records(train_path, image_root)
    if cfg.data.get("max_samples"):
        records = records[: int(cfg.data.max_samples)]
    return train_path, image_root, records, form


def ensure_model(cfg: DictConfig, corpus: list[str], terms: list[str] = ()) -> str:
    """Path of the backbone. The tiny default is built here on first use (tokenizer trained on the
    training texts, with ``terms``, the profile terms, as whole-word tokens when ``model.build.term_tokens``),
    so `train_sft.py` works with no weights at all."""
    path = Path(str(cfg.model.path))
    build = cfg.model.get("build")
    if build and not (path / "config.json").is_file():
        if not is_main_process():
            raise ConfigError(f"model.path={path} does not exist yet; build the tiny model first with a single process run")
        from preferthinker.modeling import build_tiny_model

        kwargs = OmegaConf.to_container(build, resolve=True)
        words = list(terms) if kwargs.pop("term_tokens", False) else []
        log.info("building the tiny Qwen2.5-VL at %s from %d training texts (%d whole-word term tokens)", path, len(corpus), len(words))
        build_tiny_model(path, corpus, word_tokens=words, **kwargs)
    elif build and is_main_process():
        from preferthinker.modeling import build_mismatches

        diff = build_mismatches(path, OmegaConf.to_container(build, resolve=True))
        if diff:
            log.warning("model.path=%s was built with other sizes than model.build (%s); it is used as it is. Delete "
                        "the folder to rebuild the tiny model from the config, or set model.build=null to silence this.",
                        path, "; ".join(diff))
    return str(path)


def last_checkpoint(output_dir: Path) -> str | None:
    ckpts = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    ckpts = [c for c in ckpts if (c / "trainer_state.json").is_file()]
    return str(ckpts[-1]) if ckpts else None


def resume_target(cfg: DictConfig, output_dir: Path) -> str | None:
    if cfg.resume in (False, None, "false"):
        return None
    if cfg.resume == "auto":
        return last_checkpoint(output_dir)
    return str(cfg.resume)


def train_with_resume(trainer: Any, cfg: DictConfig) -> tuple[Any, float, str | None]:
    """``trainer.train()``, continuing from ``cfg.resume`` (``auto`` = the newest checkpoint in the output dir).

    The Trainer then skips the batches already consumed, so a resumed run sees the same data order.
    Returns the train output, the wall time of the call in seconds and the checkpoint resumed from (or None).
    """
    resume = resume_target(cfg, Path(trainer.args.output_dir))
    if resume:
        log.info("resuming from %s", resume)
        if not cfg.deepspeed.enabled:
            restore_checkpoint_weights(trainer.model, resume)
    t0 = time.time()
    out = trainer.train(resume_from_checkpoint=resume)
    return out, time.time() - t0, resume


def restore_checkpoint_weights(model: Any, checkpoint: str) -> None:
    """Load a checkpoint's full weights into ``model`` before ``trainer.train(resume_from_checkpoint=...)``.

    Why: transformers 5.x saves Qwen2.5-VL checkpoints with the legacy key names (``visual.*``,
    ``model.layers.*``) but the Trainer's resume path reloads them with ``load_state_dict(strict=False)``
    without the key conversion, so most weights are silently left as they were (the run "resumes" from
    the initial model; caught by tests/test_train_sft.py). ``from_pretrained`` applies the conversion.
    DeepSpeed and LoRA resumes load through their own paths and do not need this.
    """
    import torch

    ckpt = Path(checkpoint)
    if not any(ckpt.glob("*.safetensors")) or (ckpt / "adapter_config.json").is_file():
        return
    loaded = type(model).from_pretrained(str(ckpt), dtype=next(model.parameters()).dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    del loaded
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    log.info("restored weights from %s", ckpt)


def trainer_kwargs(cfg: DictConfig, run_dir: Path) -> dict:
    """Common TrainingArguments fields from the config groups (logger, deepspeed, precision, seed)."""
    kw = OmegaConf.to_container(cfg.trainer, resolve=True)
    kw["bf16"] = resolve_precision(kw.get("bf16", "auto"))
    kw.setdefault("use_cpu", not _cuda())
    report_to = list(cfg.logger.report_to)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tb")  # transformers 5 reads the tensorboard dir from here
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_MODE", str(cfg.logger.wandb_mode))
        os.environ.setdefault("WANDB_PROJECT", str(cfg.logger.project))
        os.environ.setdefault("WANDB_DIR", str(run_dir))
    kw.update(
        output_dir=str(run_dir / "checkpoints"),
        report_to=report_to or "none",
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        remove_unused_columns=False,
        disable_tqdm=not is_main_process(),
        run_name=run_dir.name,
    )
    if cfg.deepspeed.enabled:
        kw["deepspeed"] = OmegaConf.to_container(cfg.deepspeed.config, resolve=True)
    if kw.get("gradient_checkpointing"):
        kw.setdefault("gradient_checkpointing_kwargs", {"use_reentrant": False})
    return kw


def make_args(config_cls: type, kw: dict):
    """Build a TRL config; an unknown trainer.* key becomes a ConfigError naming it."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]}: not a {config_cls.__name__} field (unknown: {unknown}). "
                          f"Check the spelling against the TRL {config_cls.__name__} documentation.")
    try:
        return config_cls(**kw)
    except ValueError as e:  # TRL / transformers validate combinations in __post_init__
        raise ConfigError(f"trainer: {config_cls.__name__} rejected the settings: {e}") from None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def peft_config(cfg: DictConfig):
    if not cfg.peft.get("enabled"):
        return None
    from preferthinker.modeling import lora_config

    p = cfg.peft
    return lora_config(r=int(p.r), alpha=int(p.alpha), dropout=float(p.dropout), target_modules=list(p.target_modules), include_vision=bool(p.include_vision))


def save_final(trainer: Any, processor: Any, cfg: DictConfig, run_dir: Path) -> Path:
    """final/ is an ordinary HF directory; a LoRA run keeps its adapter in final/adapter and, with
    merge_lora, a merged full model in final/."""
    final = run_dir / "final"
    if cfg.peft.get("enabled"):
        adapter_dir = final / "adapter"
        trainer.save_model(str(adapter_dir))
        if is_main_process():
            processor.save_pretrained(str(adapter_dir))
        if cfg.get("merge_lora", True) and is_main_process():
            from preferthinker.modeling import merge_lora

            merge_lora(adapter_dir, final, base_path=str(cfg.model.path))
    else:
        trainer.save_model(str(final))
        if is_main_process():
            processor.save_pretrained(str(final))
    if is_main_process():
        for folder in (final, final / "adapter") if cfg.peft.get("enabled") else (final,):
            write_checkpoint_record(cfg, folder)
    return final


def write_checkpoint_record(cfg: DictConfig, folder: Path) -> None:
    """``<folder>/preferthinker.json``: the prompt settings and image bounds a checkpoint was trained with (read by
    preferthinker.Assessor and eval)."""
    record = {"prompt": {"style": str(cfg.prompt.style), "system": None if cfg.prompt.system is None else str(cfg.prompt.system),
                         "max_refs": int(cfg.prompt.max_refs)},
              "min_pixels": int(cfg.model.min_pixels), "max_pixels": int(cfg.model.max_pixels), "stage": str(cfg.get("task_name") or "sft")}
    write_json(folder / "preferthinker.json", record)


def distributed_report(model: Any) -> dict | None:
    """Evidence that a multi-process run really trained one model: the process group's size and backend
    and every rank's SHA-256 of its full parameter set (ZeRO-3 shards are gathered first)."""
    import hashlib

    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    params = [p for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0])]
    digest = hashlib.sha256()

    def _hash() -> None:
        for p in params:
            digest.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())

    if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3: each rank holds a shard until gathered
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            _hash()
    else:
        _hash()
    hashes: list = [None] * dist.get_world_size()
    dist.all_gather_object(hashes, digest.hexdigest())
    return {"world_size": dist.get_world_size(), "backend": dist.get_backend(), "param_sha256_per_rank": hashes,
            "ranks_agree": len(set(hashes)) == 1}


def throughput(history: list[dict], wall_s: float, model: Any) -> dict:
    """Tokens/s over the run (TRL's num_tokens counts every input token, prompt and image tokens included),
    model FLOPs utilisation against a 989 TFLOP/s bf16 peak (H100/H200) with the 6*N*tokens rule, and
    the peak GPU memory of this process."""
    import torch

    tokens = max((h.get("num_tokens", 0) for h in history), default=0)
    n_params = sum(getattr(p, "ds_numel", 0) or p.numel() for p in model.parameters())  # ZeRO-3 partitions numel() to 0
    out = {"tokens": int(tokens), "tokens_per_s": round(tokens / wall_s, 1) if wall_s > 0 else None}
    if torch.cuda.is_available():
        out["mfu_6N"] = round(6 * n_params * tokens / wall_s / 989e12, 4) if wall_s > 0 else None
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def fault_injection_callbacks() -> list:
    """``PT_FAULT_AT_STEP=N`` hard-kills the process (SIGKILL, no cleanup) when optimizer step N ends:
    how the resume tests interrupt a run at a known point. Unset, it adds nothing."""
    step = int(os.environ.get("PT_FAULT_AT_STEP", "0") or 0)
    if step <= 0:
        return []
    import signal

    from transformers import TrainerCallback

    class _Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return [_Kill()]


def plot_curves(log_history: list[dict], out: Path, keys: tuple[str, ...] = ("loss",), title: str = "") -> Path | None:
    """Learning curve(s) from the trainer's log history (one panel per key present)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience; never fail a finished run over them
        log.warning("matplotlib is not installed: no plot written to %s", out)
        return None

    keys = tuple(k for k in keys if any(k in h for h in log_history))
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
