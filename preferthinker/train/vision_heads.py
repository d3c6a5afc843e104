"""A curriculum phase that trains the vision tower alone (``kind: vision_heads`` in ``configs/curriculum/``).

The tiny default's ViT starts from random weights. Rows that ask the whole model to name an image's terms teach it
Color and Saturation within a few hundred steps but leave Art Styles and Detail near chance: the language model's
loss reaches the ViT through every element at once, and the two texture-like elements never form
(``research/vit_probe.py``: a ViT with a linear head learns either of them when it is taught alone). This phase
is that probe as a training step. It takes the vision tower of ``model.path`` (patch embedding, ViT blocks, merger),
puts one linear head per element on the mean of each image's merged tokens, and trains tower and heads by
cross-entropy over each element's terms on the single images of the training records whose profile is known (both
candidates and one reference per side, as the alignment rows use). The first ``first_steps`` steps train only
``first_elements``' heads (the elements the joint loss does not form); the rest train every element's. The heads
are then dropped and the checkpoint is saved with the new tower and the language model untouched, so the phases
after it (alignment rows, CoT) teach the language model to read features the tower already separates.

Settings: the ``vision_heads`` group of ``configs/sft.yaml``. Results: ``results.json`` (held-out accuracy per element
on images of the last records, which the phase does not train on, next to chance), ``log_history.json``, a loss plot.
Synthetic data only: records without per-image truth give no images, and the phase says so.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from preferthinker.runtime import ConfigError, check, is_main_process, setup_run, write_json

log = logging.getLogger("preferthinker.sft")


def settings(cfg: DictConfig) -> dict:
    """The ``vision_heads`` group, checked; a bad value is a ConfigError naming its key."""
    from preferthinker.profile import ELEMENTS

    vh = cfg.get("vision_heads")
    check(vh is not None and OmegaConf.is_dict(vh), "vision_heads", vh, "the SFT config's vision_heads group (configs/sft.yaml) is missing")

    def listed(key: str) -> list[str] | None:
        value = vh.get(key)
        if value is None:
            return None
        check(OmegaConf.is_list(value) and len(value) > 0 and all(e in ELEMENTS for e in value), f"vision_heads.{key}", value,
              f"use null or a list of profile elements, e.g. [Art Styles, Detail]; choose from {list(ELEMENTS)}")
        return [str(e) for e in value]

    def number(key: str, kind: type, low: float, high: float, what: str) -> Any:
        value = vh.get(key)
        try:
            ok = not isinstance(value, bool) and low <= kind(value) <= high and (kind is float or float(value) == int(value))
        except (TypeError, ValueError):
            ok = False
        check(ok, f"vision_heads.{key}", value, what)
        return kind(value)

    out = {
        "steps": number("steps", int, 1, 1_000_000, "use a step count from 1 to 1,000,000"),
        "batch_size": number("batch_size", int, 1, 4096, "use 1..4096 images per step"),
        "learning_rate": number("learning_rate", float, 1e-8, 1.0, "use a positive learning rate up to 1"),
        "first_steps": number("first_steps", int, 0, 1_000_000, "use 0 (no first block) or a step count"),
        "eval_images": number("eval_images", int, 0, 100_000, "use 0 (no held-out accuracy) or an image count"),
        "elements": listed("elements") or list(ELEMENTS),
        "first_elements": listed("first_elements"),
    }
    check(out["first_steps"] <= out["steps"], "vision_heads.first_steps", out["first_steps"], f"use at most vision_heads.steps={out['steps']}")
    if out["first_elements"] is not None:
        check(set(out["first_elements"]) <= set(out["elements"]), "vision_heads.first_elements", out["first_elements"],
              f"name elements of vision_heads.elements={out['elements']}")
    return out


def run_phase(cfg: DictConfig) -> dict:
    """Train the vision tower of ``cfg.model.path`` with one linear head per element; save final/ and results.json."""
    import torch

    from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer, images_with_truth, profile_terms
    from preferthinker.data.schema import SchemaError, resolve_image
    from preferthinker.modeling import get_vision_tower, load_model_and_processor
    from preferthinker.prompting import ImageLoadError, load_image
    from preferthinker.train.common import ensure_model, plot_curves, sft_records, write_checkpoint_record

    s = settings(cfg)
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)
    train_path, image_root, records, _ = sft_records(cfg)
    run_dir = setup_run(cfg, "sft")
    rng = random.Random(int(cfg.seed))
    items = [(rel, prof) for rec in records for rel, prof in images_with_truth(rec, rng)]
    items = [(rel, prof) for rel, prof in items if all(isinstance(prof.get(e), str) for e in s["elements"])]
    n_eval = min(s["eval_images"], len(items) // 5)
    train_items, eval_items = items[: len(items) - n_eval], items[len(items) - n_eval:]
    if len(train_items) < s["batch_size"]:
        raise ConfigError(f"vision_heads: {len(train_items)} training images with a known profile in {train_path} (synthetic records carry "
                          f"true_profile_a/b and reference_profiles), fewer than vision_heads.batch_size={s['batch_size']}; this phase "
                          "needs the synthetic data (scripts/make_data.py), or drop it from the curriculum")
    terms = {e: sorted({prof[e] for _, prof in items}) for e in s["elements"]}
    log.info("vision heads: %d training images, %d held out; elements %s (%s first for %d steps); %d steps at batch %d, lr %g",
             len(train_items), len(eval_items), s["elements"], s["first_elements"], s["first_steps"], s["steps"], s["batch_size"], s["learning_rate"])

    model_path = ensure_model(cfg, corpus_for_tokenizer(records, spec), profile_terms(records))  # the tiny default: built on first use
    model, processor = load_model_and_processor(model_path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                                                min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, for_training=True, padding_side="right")
    tower = get_vision_tower(model)
    width = int(model.config.vision_config.out_hidden_size)  # the merger's output: one LM embedding per 2x2 patches
    torch.manual_seed(int(cfg.seed))
    heads = {e: torch.nn.Linear(width, len(terms[e])) for e in s["elements"]}

    def batch(chunk: list[tuple[str, dict]]):
        images = []
        for rel, _ in chunk:
            try:
                images.append(load_image(resolve_image(image_root, rel), spec.min_pixels, spec.max_pixels, what=rel))
            except (ImageLoadError, SchemaError) as e:
                raise ConfigError(f"vision_heads: image {rel} of {train_path} cannot be read: {e}") from None
        enc = processor.image_processor(images=images, return_tensors="pt")
        labels = {e: torch.tensor([terms[e].index(prof[e]) for _, prof in chunk]) for e in s["elements"]}
        return enc["pixel_values"], enc["image_grid_thw"], labels

    def pooled(pixels, grid):
        merged = tower(pixels, grid_thw=grid).pooler_output  # merged tokens, image after image
        return merged.view(grid.shape[0], -1, merged.shape[-1]).mean(1)

    def accuracy() -> dict:
        if not eval_items:
            return {}
        right = dict.fromkeys(s["elements"], 0)
        tower.eval()
        with torch.no_grad():
            for i in range(0, len(eval_items), 64):
                pixels, grid, labels = batch(eval_items[i:i + 64])
                h = pooled(pixels, grid)
                for e in s["elements"]:
                    right[e] += int((heads[e](h).argmax(-1) == labels[e]).sum())
        tower.train()
        return {e: round(right[e] / len(eval_items), 4) for e in s["elements"]}

    for p in model.parameters():
        p.requires_grad_(False)
    params = list(tower.parameters()) + [q for head in heads.values() for q in head.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s["learning_rate"], weight_decay=0.0)
    warm = max(1, s["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warm))
    first = s["first_elements"] or []
    before = accuracy()
    history: list[dict] = []
    t0, losses = time.time(), []
    tower.train()
    for step in range(1, s["steps"] + 1):
        pixels, grid, labels = batch(rng.sample(train_items, s["batch_size"]))
        h = pooled(pixels, grid)
        active = first if first and step <= s["first_steps"] else s["elements"]
        loss = sum(torch.nn.functional.cross_entropy(heads[e](h), labels[e]) for e in active) / len(active)
        if not torch.isfinite(loss):
            raise RuntimeError(f"vision_heads: the loss is {loss.item()} at step {step}; lower vision_heads.learning_rate={s['learning_rate']}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0 or step == s["steps"]:
            history.append({"step": step, "loss": round(sum(losses[-10:]) / len(losses[-10:]), 4), "learning_rate": sched.get_last_lr()[0],
                            "elements": "first" if active is first else "all"})
            if step % 100 == 0 or step == s["steps"]:
                log.info("vision heads step %d/%d: loss %.4f (%s)", step, s["steps"], history[-1]["loss"], ", ".join(active))
    wall = time.time() - t0
    after = accuracy()

    final = run_dir / "final"
    model.train(False)
    model.save_pretrained(str(final))
    processor.save_pretrained(str(final))
    results = {
        "stage": "sft", "kind": "vision_heads", "final_model": str(final), "global_step": s["steps"],
        "train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4), "train_runtime_s": round(wall, 1),
        "train_images": len(train_items), "heldout_images": len(eval_items), "settings": s,
        "heldout_accuracy_before": before, "heldout_accuracy": after,
        "chance": {e: round(1 / len(terms[e]), 4) for e in s["elements"]},
    }
    if is_main_process():
        write_checkpoint_record(cfg, final)
        plot_curves(history, run_dir / "learning_curve.png", ("loss", "learning_rate"), f"vision heads {run_dir.name}")
        write_json(run_dir / "log_history.json", history)
        write_json(run_dir / "results.json", results)
    log.info("vision heads done in %.0fs: held-out accuracy %s (chance %s), final model %s", wall, after, results["chance"], final)
    return results
