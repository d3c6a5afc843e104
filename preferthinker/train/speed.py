"""SFT throughput switches: what each one does with TRL 1.16 / transformers 5, checked before any model loads.

The ``speed`` block of configs/sft.yaml, plus three existing keys, each switchable and reported in results.json:

* ``speed.padding_free``: TRL 1.16's ``SFTTrainer`` refuses both padding-free batches and packing for any dataset with
  images ("Padding-free training is yet not supported for vision datasets", "Packing is not supported for vision
  datasets": ``trl/trainer/sft_trainer.py``, in ``__init__`` after ``_is_vision_dataset``), and every PreferThinker
  sample carries images. ``true`` is therefore a ConfigError that quotes that check instead of a failure deep inside TRL.
* ``speed.liger_kernel``: liger-kernel's RMSNorm / RoPE / SwiGLU kernels through ``SFTConfig.use_liger_kernel``
  (needs ``pip install -e ".[liger]"``). The fused linear + cross-entropy is not liger's here: TRL 1.16 already patches
  the model with its own fused LM head (``add_fused_lm_head``: tiled log-probs of the labelled positions, never the full
  [tokens, vocab] logits), always on, and refuses liger's ``fused_linear_cross_entropy`` next to it.
* ``speed.length_split``: each optimizer step's batch (``per_device_train_batch_size`` rows) is cut into this many
  micro-batches, the rows sorted by length so that short rows share a micro-batch, and the gradients accumulated
  (``StepSortedSampler``; ``gradient_accumulation_steps`` is multiplied by it). A step sees the same rows as an
  unsplit batch and TRL's loss divides the token sum by the tokens of the whole accumulation window
  (``num_items_in_batch``), so the update is the unsplit one; only padding is saved. The tiny default's CoT phase mixes
  ~440-token responses with ~30-token alignment rows one to one: a random batch of 8 pads every row to the longest.
  (Grouping whole batches by length instead, transformers' ``group_by_length``, changes the recipe: alignment-only
  steps, half as many CoT steps; measured at chance on the tiny default, docs/results.md.)
* ``model.attn_implementation``: ``auto`` picks FlashAttention-2 when ``flash_attn`` imports on CUDA in half precision
  (varlen kernels for the vision tower too: transformers gives the ViT the same implementation), else SDPA;
  ``flash_attention_2`` asks for it explicitly and is a ConfigError when flash-attn or CUDA is missing.
* ``trainer.gradient_checkpointing`` (off by default: recompute costs ~1/3 more compute; turn it on only when the
  activations do not fit) and ``trainer.per_device_train_batch_size`` (larger micro-batches amortise the per-step
  overhead) are the trainer's own keys.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from omegaconf import DictConfig

from preferthinker.runtime import ConfigError, check

__all__ = ["StepSortedSampler", "row_length", "speed_report", "speed_settings", "with_step_sorted_sampler"]

_TRL_VLM_REFUSAL = ("TRL 1.16's SFTTrainer refuses padding-free batches and packing for vision datasets "
                    "(trl/trainer/sft_trainer.py: 'Padding-free training is yet not supported for vision datasets'), and "
                    "every PreferThinker sample has images; set speed.padding_free=false")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def speed_settings(cfg: DictConfig, cuda: bool | None = None) -> dict[str, Any]:
    """Validate the SFT speed switches and return the ``SFTConfig`` fields they set (``sft_args``)."""
    speed = cfg.get("speed") or {}
    padding_free = speed.get("padding_free", False)
    check(isinstance(padding_free, bool), "speed.padding_free", padding_free, "use true or false")
    if padding_free:
        raise ConfigError(f"speed.padding_free=true: {_TRL_VLM_REFUSAL}")
    liger = speed.get("liger_kernel", False)
    check(isinstance(liger, bool), "speed.liger_kernel", liger, "use true or false")
    if liger and not _installed("liger_kernel"):
        raise ConfigError('speed.liger_kernel=true: liger-kernel is not installed; `pip install -e ".[liger]"` '
                          "(CUDA + Triton) or set speed.liger_kernel=false")
    attn = str(cfg.model.get("attn_implementation") or "auto")
    check(attn in ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"), "model.attn_implementation", attn,
          "choose auto, sdpa, eager, flash_attention_2 or flash_attention_3")
    if attn.startswith("flash_attention"):
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        package = "flash_attn" if attn == "flash_attention_2" else "flash_attn_interface"
        if not _installed(package):
            raise ConfigError(f'model.attn_implementation={attn}: the {package} package is not installed (`pip install -e ".[flash]"`, '
                              "CUDA only); use auto (FlashAttention when available, else SDPA) or sdpa")
        if not cuda:
            raise ConfigError(f"model.attn_implementation={attn}: FlashAttention runs on CUDA only; use auto or sdpa on this machine")
    split = speed.get("length_split", 1)
    check(isinstance(split, int) and not isinstance(split, bool) and 1 <= split <= 64, "speed.length_split", split,
          "use an integer 1..64 (1 = off)")
    batch = int(cfg.trainer.per_device_train_batch_size)
    check(batch % split == 0, "speed.length_split", split,
          f"must divide trainer.per_device_train_batch_size={batch} (each micro-batch gets batch/length_split rows)")
    return {"padding_free": False, "liger_kernel": bool(liger), "length_split": split,
            "sft_args": {"use_liger_kernel": True} if liger else {}}


def speed_report(model: Any, args: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The throughput settings a run actually trained with (results.json ``speed``)."""
    cfg = getattr(model, "config", None)
    vision = getattr(cfg, "vision_config", None)
    return {
        "padding_free": settings["padding_free"],
        "liger_kernel": settings["liger_kernel"],
        "length_split": settings.get("length_split", 1),
        "fused_lm_head": "trl",  # TRL 1.16 SFTTrainer's own tiled log-prob head, always on
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "vision_attn_implementation": getattr(vision, "_attn_implementation", None),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "per_device_train_batch_size": int(args.per_device_train_batch_size),
        "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
        "bf16": bool(args.bf16),
    }


def row_length(row: dict[str, Any], tokens_per_image: int) -> int:
    """Approximate token length of a conversational SFT row (prompt + completion): ~4 characters per text token plus
    ``tokens_per_image`` per image. Only the order of lengths matters to the sampler."""
    chars, images = 0, 0
    for msg in [*(row.get("prompt") or []), *(row.get("completion") or [])]:
        content = msg.get("content")
        for part in ([{"type": "text", "text": content}] if isinstance(content, str) else content or []):
            if part.get("type") == "image":
                images += 1
            else:
                chars += len(str(part.get("text") or ""))
    return chars // 4 + images * int(tokens_per_image)


class StepSortedSampler:
    """Row indices for a data loader with micro-batches of ``rows_per_step / split`` rows: each epoch draws a seeded
    permutation, cuts it into steps of ``rows_per_step`` rows (one optimizer step each), and sorts every step's rows
    by length, longest first, so its micro-batches hold rows of like length. Every row comes once per epoch, and a
    step holds the rows a random batch of ``rows_per_step`` would. ``set_epoch`` (called by the Trainer each epoch)
    fixes the order, so a resumed run sees the same steps."""

    def __init__(self, lengths: list[int], rows_per_step: int, seed: int = 0):
        if rows_per_step < 1:
            raise ValueError(f"rows_per_step must be >= 1, got {rows_per_step}")
        self.lengths, self.rows_per_step, self.seed, self.epoch = list(lengths), int(rows_per_step), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def steps(self) -> list[list[int]]:
        import numpy as np

        perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths)).tolist()
        return [sorted(perm[i:i + self.rows_per_step], key=lambda j: -self.lengths[j])
                for i in range(0, len(perm), self.rows_per_step)]

    def __iter__(self):
        for step in self.steps():
            yield from step


def with_step_sorted_sampler(trainer_cls: type, lengths: list[int], seed: int) -> type:
    """A subclass of ``trainer_cls`` drawing its training rows from a ``StepSortedSampler`` over ``lengths`` (one per
    training row), one step = micro-batch x gradient accumulation rows."""

    class StepSortedTrainer(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Qwen2.5-VL declares accepts_loss_kwargs=False, so the Trainer would not count the labelled tokens of the
            # accumulation window (num_items_in_batch) and TRL would average each micro-batch on its own, weighting a
            # micro-batch of short rows like one of long rows. TRL's SFT loss (per-token log-probs of its fused head,
            # never the model's own loss) divides by num_items_in_batch when it gets it: counted, the split step's
            # loss is the token mean over all its rows, as in the unsplit batch.
            self.model_accepts_loss_kwargs = True

        def _get_train_sampler(self, train_dataset=None):
            ds = self.train_dataset if train_dataset is None else train_dataset
            if ds is None or len(ds) != len(lengths):
                return super()._get_train_sampler(train_dataset)
            rows = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            return StepSortedSampler(lengths, rows, seed=seed)

    StepSortedTrainer.__name__ = f"StepSorted{trainer_cls.__name__}"
    return StepSortedTrainer
