"""Stage 1 recipe: cold-start SFT on PreferImg-CoT with TRL's SFTTrainer.

Reads top to bottom: config checks -> run dir -> records -> model + processor -> TRL dataset ->
SFTConfig -> train (resuming if asked) -> final HF directory (+ merged LoRA) -> curve + results.json.

Loss covers the assistant response only: samples are conversational prompt/completion pairs, for which
TRL masks every prompt token (system, user text, image tokens) out of the labels.

    python scripts/train_sft.py                                  # tiny default on CPU
    accelerate launch --num_processes 8 scripts/train_sft.py model=qwen2_5_vl_7b deepspeed=zero3 run_dir=...
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from preferthinker.data.loading import (PromptSpec, build_alignment_examples, build_check_examples, build_examples, build_read_examples,
                                        build_total_examples, corpus_for_tokenizer, image_root_for, profile_terms)
from preferthinker.data.refs import RefDraw, parse_ref_draw
from preferthinker.data.sft_formats import load_sft_records
from preferthinker.runtime import ConfigError, check, is_main_process, setup_run, write_json

log = logging.getLogger("preferthinker.sft")


# --------------------------------------------------------------------------------------------------
# pieces shared with the GRPO recipe (kept small and explicit; the recipes stay readable on their own)


def ref_draw(cfg: DictConfig) -> RefDraw | None:
    """``data.refs_per_side`` and ``data.refs_paired`` as a RefDraw (None: every reference up to prompt.max_refs); a bad value is a
    ConfigError naming the key (see preferthinker/data/refs.py for the forms)."""
    value = cfg.data.get("refs_per_side")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    try:
        return parse_ref_draw(value, cfg.data.get("refs_paired", False))
    except ValueError as e:
        raise ConfigError(f"{e}. Use null (all references), an int or a list such as [1, 2, 3, 5]; refs_paired true or false") from None


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
    check(str(cfg.data.get("check_candidates") or "data") in ("data", "uniform"), "data.check_candidates", cfg.data.get("check_candidates"),
          "choose data (sections of the records' own responses) or uniform (candidate terms drawn uniformly)")
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


def is_vision_parameter(name: str) -> bool:
    """Qwen2.5-VL's vision tower (patch embedding, ViT blocks, merger): ``model.visual.*``, also under a PEFT wrapper."""
    return "visual" in name.split(".")


def set_vision_learning_rate(optimizer: Any, model: Any, lr: float) -> int:
    """Move the vision tower's parameters of a freshly built optimizer into groups of their own at ``lr``
    (same weight decay as the group they leave); the scheduler, built afterwards, scales every group alike.
    Returns how many parameter tensors moved."""
    vision = {id(p) for n, p in model.named_parameters() if is_vision_parameter(n)}
    moved = 0
    for group in list(optimizer.param_groups):
        mine = [p for p in group["params"] if id(p) in vision]
        if not mine:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in vision]
        optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": mine, "lr": lr})
        moved += len(mine)
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    return moved


def with_vision_learning_rate(trainer_cls: type, lr: float | None) -> type:
    """``trainer_cls`` unchanged when ``lr`` is None, else a subclass whose optimizer trains the vision tower at ``lr``."""
    if lr is None:
        return trainer_cls

    class VisionLRTrainer(trainer_cls):
        def create_optimizer(self, model=None):
            fresh = self.optimizer is None
            optimizer = super().create_optimizer(model)
            if fresh:
                n = set_vision_learning_rate(optimizer, self.model if model is None else model, lr)
                log.info("vision tower: %d parameter tensors at learning rate %g (the rest at %g)", n, lr, self.args.learning_rate)
            return optimizer

    VisionLRTrainer.__name__ = f"VisionLR{trainer_cls.__name__}"
    return VisionLRTrainer


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
    if is_main_process():  # prompt settings the checkpoint was trained with (read by preferthinker.Assessor)
        record = {"prompt": {"style": str(cfg.prompt.style), "system": None if cfg.prompt.system is None else str(cfg.prompt.system),
                             "max_refs": int(cfg.prompt.max_refs)},
                  "min_pixels": int(cfg.model.min_pixels), "max_pixels": int(cfg.model.max_pixels), "stage": str(cfg.get("task_name") or "sft")}
        for folder in (final, final / "adapter") if cfg.peft.get("enabled") else (final,):
            write_json(folder / "preferthinker.json", record)
    return final


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


# --------------------------------------------------------------------------------------------------
# the recipe


def run(cfg: DictConfig) -> dict:
    """Train, save final/, write results.json; returns the results dict."""
    from preferthinker.train.speed import speed_report, speed_settings

    validate_common(cfg)
    speed = speed_settings(cfg)  # throughput switches: checked before any model loads
    run_dir = setup_run(cfg, "sft")
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)

    # 1. records (official training JSONL; conversations[1].value is the CoT target)
    train_path = Path(str(cfg.data.train_sft))
    if not train_path.is_file():
        raise ConfigError(f"data.train_sft={train_path}: file does not exist. Make the synthetic data with "
                          f"`python scripts/make_data.py`, or point data.train_sft at an official-schema JSONL")
    image_root = image_root_for(train_path, cfg.data.image_root)
    records, form = load_sft_records(train_path, image_root)  # ours / official JSONL or LLaMA-Factory ShareGPT, detected
    if cfg.data.get("max_samples"):
        records = records[: int(cfg.data.max_samples)]
    n_val = min(int(cfg.data.get("val_samples") or 0), len(records) // 10)
    train_recs, val_recs = records[n_val:], records[:n_val]
    log.info("records: %d train, %d validation (from %s, %s form)", len(train_recs), len(val_recs), train_path, form)

    # 2. backbone + processor (the tiny default is built from the training texts on first use)
    from preferthinker.modeling import count_parameters, load_model_and_processor

    model_path = ensure_model(cfg, corpus_for_tokenizer(records, spec), profile_terms(records))
    model, processor = load_model_and_processor(
        model_path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
        freeze_vision=bool(cfg.model.freeze_vision), min_pixels=spec.min_pixels, max_pixels=spec.max_pixels,
        for_training=True, padding_side="right",
    )
    log.info("model %s: %s parameters", model_path, f"{count_parameters(model)['total']:,}")

    # 3. TRL dataset: conversational prompt/completion + images, loss on the completion only
    from datasets import Dataset

    max_length = cfg.get("max_length")
    draw = ref_draw(cfg)  # 1-5 references per side per row (data.refs_per_side), drawn per record, seeded
    if draw is not None:
        log.info("references per side drawn per record from %s (%s)", list(draw.counts), "one count for both sides" if draw.paired else "each side on its own")
    rows = build_examples(train_recs, image_root, spec, kind="sft", processor=processor, max_length=max_length, source=str(train_path),
                          ref_draw=draw, seed=int(cfg.seed))
    schedule = str(cfg.data.get("align_schedule") or "mixed")
    aux: list[dict] = []
    if int(cfg.data.get("align_per_record") or 0) > 0:  # vision-alignment rows (see build_alignment_examples)
        elements = cfg.data.get("align_elements")
        aux += build_alignment_examples(train_recs, image_root, spec, per_record=int(cfg.data.align_per_record), seed=int(cfg.seed),
                                        elements=list(elements) if elements else None)
    n_align = len(aux)
    if int(cfg.data.get("check_per_record") or 0) > 0:  # text-only matching drill rows (see build_check_examples)
        aux += build_check_examples(train_recs, spec, per_record=int(cfg.data.check_per_record), seed=int(cfg.seed),
                                    candidates=str(cfg.data.get("check_candidates") or "data"))
        if len(aux) == n_align:
            raise ConfigError(f"data.check_per_record={cfg.data.check_per_record}: the responses of {train_path} have no section notes to "
                              "drill on (describe_candidates=checks); remake the data with it or set data.check_per_record=0")
    n_check = len(aux) - n_align
    if int(cfg.data.get("read_per_record") or 0) > 0:  # candidate-reading rows in the whole prompt (see build_read_examples)
        aux += build_read_examples(train_recs, image_root, spec, per_record=int(cfg.data.read_per_record))
        if len(aux) == n_align + n_check:
            raise ConfigError(f"data.read_per_record={cfg.data.read_per_record}: the records of {train_path} carry no per-candidate truth "
                              "(true_profile_a/b, synthetic data only); set data.read_per_record=0")
    n_read = len(aux) - n_align - n_check
    if bool(cfg.data.get("total_rows")):  # text-only "add up the scores" drill rows (see build_total_examples)
        aux += build_total_examples(train_recs, spec)
        if len(aux) == n_align + n_check + n_read:
            raise ConfigError(f"data.total_rows=true: the responses of {train_path} have no per-element sections before a "
                              "'Total:' line to drill on; set data.total_rows=false")
    n_total = len(aux) - n_align - n_check - n_read
    if aux:
        if schedule == "only":  # a stage of its own (vision alignment, check drill), before a CoT run from its final/
            rows = aux
        elif schedule == "first":  # curriculum: every auxiliary row before the first CoT row, each block in a seeded order
            import random

            rng = random.Random(int(cfg.seed))
            rng.shuffle(aux)
            rng.shuffle(rows)
            rows = aux + rows
        else:
            rows += aux
        log.info("%d single-image alignment rows, %d text-only check rows, %d candidate-reading rows, %d add-up rows (%s)", n_align,
                 n_check, n_read, n_total, {"first": "all before the CoT rows", "only": "no CoT rows"}.get(schedule, "mixed in"))
    train_ds = Dataset.from_list(rows)
    val_ds = (Dataset.from_list(build_examples(val_recs, image_root, spec, kind="sft", processor=processor, max_length=max_length, source=str(train_path),
                                                 ref_draw=draw, seed=int(cfg.seed)))
              if val_recs else None)

    # 4. trainer
    from trl import SFTConfig, SFTTrainer

    kw = trainer_kwargs(cfg, run_dir)
    kw.update(max_length=None, completion_only_loss=True, dataset_kwargs={"skip_prepare_dataset": True}, **speed["sft_args"])
    if aux and schedule == "first":
        kw["train_sampling_strategy"] = "sequential"  # keep the curriculum order (already shuffled within each block)
    if val_ds is not None:
        kw.setdefault("eval_strategy", "steps")
        kw.setdefault("eval_steps", kw.get("save_steps", 100))
        kw.setdefault("per_device_eval_batch_size", kw["per_device_train_batch_size"])
    args = make_args(SFTConfig, kw)
    vision_lr = cfg.get("vision_learning_rate")
    trainer = with_vision_learning_rate(SFTTrainer, None if vision_lr is None else float(vision_lr))(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=processor,
        peft_config=peft_config(cfg), callbacks=fault_injection_callbacks())
    log.info("trainable parameters: %s", f"{count_parameters(trainer.model)['trainable']:,}")

    # 5. train (a resumed run continues with the same data order)
    out, wall, resume = train_with_resume(trainer, cfg)

    # 6. outputs
    dist_info = distributed_report(trainer.model)
    final = save_final(trainer, processor, cfg, run_dir)
    history = trainer.state.log_history
    results = {
        "stage": "sft",
        "final_model": str(final),
        "train_loss": out.training_loss,
        "global_step": trainer.state.global_step,
        "train_samples": len(train_ds),
        "alignment_rows": n_align,
        "check_rows": n_check,
        "read_rows": n_read,
        "total_rows": n_total,
        "align_schedule": schedule if aux else None,
        "train_runtime_s": round(wall, 1),
        "samples_per_s": round(out.metrics.get("train_samples_per_second", 0.0), 3),
        "resumed_from": resume,
        "eval_loss": next((h["eval_loss"] for h in reversed(history) if "eval_loss" in h), None),
        "distributed": dist_info,
        "deepspeed_stage": int(cfg.deepspeed.config.zero_optimization.stage) if cfg.deepspeed.enabled else None,
        "speed": speed_report(model, args, speed),
        **throughput(history, wall, model),
    }
    if is_main_process():
        plot_curves(history, run_dir / "learning_curve.png", ("loss", "eval_loss", "learning_rate", "grad_norm"), f"SFT {run_dir.name}")
        write_json(run_dir / "log_history.json", history)
        write_json(run_dir / "results.json", results)
    log.info("SFT done in %.0fs: loss %.4f, final model %s", wall, out.training_loss, final)
    return results
