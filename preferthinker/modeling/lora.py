"""LoRA on the Qwen2.5-VL language model (optionally the ViT too), and merging an adapter back into a plain
checkpoint."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preferthinker.modeling.loading import ModelLoadError, _adapter_base_path, _has_processor, load_model_and_processor

if TYPE_CHECKING:
    import peft
    import transformers

log = logging.getLogger("preferthinker.modeling")

# LoRA targets on the language model: every attention and MLP projection, the usual "all-linear" choice
# for Qwen decoders (lm_head and embeddings excluded).
LM_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Extra targets added when the ViT is adapted too: its fused attention input and output projections
# (`blocks.N.attn.qkv`, `blocks.N.attn.proj`). The ViT MLP already matches gate/up/down_proj above.
_VISION_EXTRA_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj")

# Module names of the vision tower (`model.visual.…`, `base_model.model.model.visual.…`). The ViT MLP reuses
# the LM names gate/up/down_proj, so plain name targets would adapt it too unless it is excluded.
VISION_EXCLUDE_REGEX = r"(.*\.)?visual(\..*)?"


def lora_config(
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] = LM_TARGET_MODULES,
    include_vision: bool = False,
) -> peft.LoraConfig:
    """Build the ``peft.LoraConfig`` used across the project (pass it to TRL as ``peft_config=``).

    Args:
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the LoRA input.
        target_modules: module-name suffixes to adapt. The defaults are every attention and MLP projection.
        include_vision: ``False`` excludes the vision tower (``VISION_EXCLUDE_REGEX``; needed because the ViT
            MLP reuses ``gate/up/down_proj``; also what vLLM's LoRA supports). ``True`` adapts the ViT too,
            adding its attention projections (``attn.qkv``, ``attn.proj``) to the targets.
    """
    from peft import LoraConfig

    if r <= 0:
        raise ValueError(f"LoRA rank r={r} must be positive.")
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    targets = list(dict.fromkeys(str(t) for t in target_modules))  # dedupe, keep order
    if not targets:
        raise ValueError("target_modules is empty: name at least one module suffix (e.g. q_proj).")
    if include_vision:
        targets += [t for t in _VISION_EXTRA_TARGETS if t not in targets]
    return LoraConfig(
        r=int(r),
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=targets,
        exclude_modules=None if include_vision else VISION_EXCLUDE_REGEX,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(
    model: transformers.PreTrainedModel,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] = LM_TARGET_MODULES,
    include_vision: bool = False,
) -> peft.PeftModel:
    """Wrap ``model`` with LoRA adapters (see ``lora_config`` for the arguments); only the adapters train."""
    from peft import get_peft_model

    config = lora_config(
        r=r, alpha=alpha, dropout=dropout, target_modules=target_modules, include_vision=include_vision
    )
    return get_peft_model(model, config)


def merge_lora(
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    base_path: str | os.PathLike | None = None,
    *,
    dtype: Any = "checkpoint",
) -> Path:
    """Merge a LoRA adapter into its base model and save a plain Hugging Face checkpoint.

    Args:
        adapter_dir: directory with ``adapter_config.json`` and the adapter weights (a TRL/PEFT save).
        out_dir: where to write the merged model and processor.
        base_path: base checkpoint; defaults to the ``base_model_name_or_path`` recorded in the adapter.
        dtype: dtype to merge and save in; ``"checkpoint"`` keeps the base checkpoint's stored dtype.

    Returns:
        ``out_dir`` as a ``Path``; it reloads with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"'{adapter}' has no adapter_config.json, so it is not a LoRA adapter directory.")
    base = _adapter_base_path(adapter, base_path)
    # Merge on CPU with the plain load (no LoRA, no freezing); sdpa is fine for a weight-only operation.
    model, processor = load_model_and_processor(base, dtype=dtype, attn_implementation="sdpa")
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if _has_processor(adapter):
        processor = AutoProcessor.from_pretrained(adapter)
    processor.tokenizer.padding_side = "left"

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.save_pretrained(out)
    processor.save_pretrained(out)
    log.info("merged LoRA adapter %s into %s -> %s", adapter, base, out)
    return out
