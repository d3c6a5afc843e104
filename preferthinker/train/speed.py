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

__all__ = ["speed_report", "speed_settings"]

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
    return {"padding_free": False, "liger_kernel": bool(liger), "sft_args": {"use_liger_kernel": True} if liger else {}}


def speed_report(model: Any, args: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The throughput settings a run actually trained with (results.json ``speed``)."""
    cfg = getattr(model, "config", None)
    vision = getattr(cfg, "vision_config", None)
    return {
        "padding_free": settings["padding_free"],
        "liger_kernel": settings["liger_kernel"],
        "fused_lm_head": "trl",  # TRL 1.16 SFTTrainer's own tiled log-prob head, always on
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "vision_attn_implementation": getattr(vision, "_attn_implementation", None),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "per_device_train_batch_size": int(args.per_device_train_batch_size),
        "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
        "bf16": bool(args.bf16),
    }
