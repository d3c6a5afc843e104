"""Stage 1 recipe: cold-start SFT on PreferImg-CoT with TRL's SFTTrainer.

Reads top to bottom: config checks -> run dir -> records -> model + processor -> TRL dataset ->
SFTConfig -> train (resuming if asked) -> final HF directory (+ merged LoRA) -> curve + results.json.

Loss covers the assistant response only: samples are conversational prompt/completion pairs, for which
TRL masks every prompt token (system, user text, image tokens) out of the labels.

    python scripts/train_sft.py                                  # tiny default on CPU: the tiny56 curriculum's phases
    accelerate launch --num_processes 8 scripts/train_sft.py model=qwen2_5_vl_7b deepspeed=zero3 run_dir=...
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from preferthinker.data.loading import (PromptSpec, build_alignment_examples, build_check_examples, build_examples, build_read_examples,
                                        build_total_examples, corpus_for_tokenizer, profile_terms)
from preferthinker.runtime import ConfigError, is_main_process, setup_run, write_json
from preferthinker.train.common import (distributed_report, ensure_model, fault_injection_callbacks, make_args, peft_config, plot_curves,
                                        ref_draw, save_final, sft_records, throughput, train_with_resume, trainer_kwargs, validate_common)

log = logging.getLogger("preferthinker.sft")


# --------------------------------------------------------------------------------------------------
# SFT-only: the vision tower at its own learning rate


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


# --------------------------------------------------------------------------------------------------
# the recipe


def run(cfg: DictConfig) -> dict:
    """``train_sft.py``: the curriculum's phases in order (``configs/curriculum/``, ``train/curriculum.py``), or one
    phase with ``curriculum=none``; returns the results dict (the last phase's, plus the curriculum table)."""
    from preferthinker.train.curriculum import phases_of, run_curriculum

    phases = phases_of(cfg)
    return run_curriculum(cfg, phases, run_phase) if phases else run_phase(cfg)


def run_phase(cfg: DictConfig) -> dict:
    """One SFT run: train, save final/, write results.json; returns the results dict."""
    from preferthinker.train.speed import speed_report, speed_settings

    validate_common(cfg)
    speed = speed_settings(cfg)  # throughput switches: checked before any model loads
    run_dir = setup_run(cfg, "sft")
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)

    # 1. records (official training JSONL; conversations[1].value is the CoT target)
    train_path, image_root, records, form = sft_records(cfg)  # ours / official JSONL or LLaMA-Factory ShareGPT, detected
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
                                    candidates=str(cfg.data.get("check_candidates") or "data"),
                                    context=str(cfg.data.get("check_context") or "none"))
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
    split, lengths = speed["length_split"], None
    if split > 1:  # each step's rows in length-sorted micro-batches, gradients accumulated: the same update, less padding
        if kw.get("train_sampling_strategy") == "sequential":
            raise ConfigError("speed.length_split>1 with data.align_schedule=first: the length-sorted steps would reorder the "
                              "curriculum; set speed.length_split=1")
        from preferthinker.prompting import IMAGE_FACTOR
        from preferthinker.train.speed import row_length

        batch = int(kw["per_device_train_batch_size"])
        kw.update(per_device_train_batch_size=batch // split, gradient_accumulation_steps=int(kw.get("gradient_accumulation_steps", 1)) * split)
        lengths = [row_length(r, spec.max_pixels // IMAGE_FACTOR ** 2) for r in rows]  # one LM token per 28x28 pixels
        log.info("each step's %d rows in %d length-sorted micro-batches of %d (rows %d..%d tokens, approx.)", batch, split, batch // split,
                 min(lengths), max(lengths))
    args = make_args(SFTConfig, kw)
    vision_lr = cfg.get("vision_learning_rate")
    trainer_cls = with_vision_learning_rate(SFTTrainer, None if vision_lr is None else float(vision_lr))
    if lengths is not None:
        from preferthinker.train.speed import with_step_sorted_sampler

        trainer_cls = with_step_sorted_sampler(trainer_cls, lengths, seed=int(cfg.seed))
    trainer = trainer_cls(
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
