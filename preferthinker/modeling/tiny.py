"""Build the tiny offline Qwen2.5-VL: small, randomly initialised, architecturally faithful, saved as an ordinary
Hugging Face directory (same seed + same texts => byte-identical files); and check a built one against the
sizes a config asks for."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from preferthinker.modeling.loading import _check_pixels, count_parameters
from preferthinker.modeling.tokenizer import QWEN2_5_VL_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, train_tokenizer

log = logging.getLogger("preferthinker.modeling")


@contextlib.contextmanager
def _seeded_fp32(seed: int):
    """Seed torch's CPU RNG and force fp32 construction, restoring the caller's RNG and default dtype after."""
    import torch

    old_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(old_dtype)


def build_tiny_model(
    out_dir: str | os.PathLike,
    texts: Iterable[str],
    *,
    seed: int = 0,
    vocab_size: int = 2048,
    text_layers: int = 4,
    hidden_size: int = 128,
    intermediate_size: int = 512,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_depth: int = 2,
    vision_hidden_size: int = 64,
    vision_intermediate_size: int = 128,
    vision_heads: int = 4,
    vision_patch_size: int = 14,
    vision_merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 56 * 56,
    word_tokens: Iterable[str] = (),
) -> Path:
    """Build a randomly initialised, architecturally faithful Qwen2.5-VL and save it to ``out_dir``.

    Everything is local: the tokenizer is trained on ``texts`` (``train_tokenizer``), the weights come from
    ``seed``. The directory holds ``config.json``, ``generation_config.json``, ``model.safetensors`` (fp32),
    the tokenizer, ``processor_config.json`` (image + video processor) and ``chat_template.jinja`` (the
    stock Qwen2.5-VL template), and reloads with ``AutoProcessor`` / ``AutoModelForImageTextToText``.
    Same seed + same texts => byte-identical ``model.safetensors`` and ``tokenizer.json``.

    With the default pixel bounds every image is resized to 56x56 = 2x2 merged patches = 4 image tokens
    (very elongated images can get a few more), which keeps 12-image prompts short on CPU.

    Args:
        out_dir: directory to write (created; existing files of the same name are overwritten).
        texts: tokenizer training corpus, e.g. rendered prompts and responses of the synthetic data.
        seed: weight-initialisation seed.
        vocab_size: upper bound on the tokenizer size (see ``train_tokenizer``); the embedding matrix has
            exactly ``len(tokenizer)`` rows.
        text_layers, hidden_size, intermediate_size, num_heads, num_kv_heads: language-model sizes.
            ``hidden_size / num_heads`` (the head dim) must be even; ``num_heads`` a multiple of ``num_kv_heads``.
        vision_depth, vision_hidden_size, vision_intermediate_size, vision_heads: ViT sizes.
            ``vision_hidden_size / vision_heads`` must be divisible by 4 (2-D rotary embedding).
        vision_patch_size, vision_merge_size: ViT patch side and the side of the square of patches the merger
            folds into one LM token. Their product must be 28 (Qwen2.5-VL: 14 x 2), so that one LM token still
            covers 28x28 pixels and every pixel bound and token count stays the real model's; 7 x 4 gives the
            ViT 16 finer patches per token (reads single images sooner, but measured worse in the whole
            pipeline, so not the tiny default: docs/results.md, "What limits it").
        min_pixels, max_pixels: image-processor bounds on resized ``height * width``.
        word_tokens: domain terms the tokenizer keeps whole (see ``train_tokenizer``), e.g. the profile terms
            of the training data, so that a term is the same single id in a profile block and in a rationale.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    # Fail early on shapes that would only break deep inside a forward pass.
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size={hidden_size} / num_heads={num_heads} must be an even integer (the head dim).")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}.")
    if vision_hidden_size % vision_heads or (vision_hidden_size // vision_heads) % 4:
        raise ValueError(
            f"vision_hidden_size={vision_hidden_size} / vision_heads={vision_heads} must be an integer divisible by 4 "
            "(the ViT uses a 2-D rotary embedding over half of each head)."
        )
    if vision_patch_size * vision_merge_size != 28:
        raise ValueError(
            f"vision_patch_size={vision_patch_size} x vision_merge_size={vision_merge_size} must be 28 (one LM token per "
            "28x28 pixels, as in Qwen2.5-VL's 14 x 2), e.g. 14 x 2 or 7 x 4."
        )
    _check_pixels(min_pixels, max_pixels)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, word_tokens=word_tokens)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}

    head_dim = hidden_size // num_heads
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": text_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "max_position_embeddings": 32768,
            "max_window_layers": text_layers,
            "use_sliding_window": False,
            # M-RoPE splits the head_dim/2 rotary frequencies between (temporal, height, width).
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": _mrope_section(head_dim),
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_intermediate_size,
            "num_heads": vision_heads,
            "out_hidden_size": hidden_size,  # the merger projects straight into the LM's embedding space
            "patch_size": vision_patch_size,
            "spatial_merge_size": vision_merge_size,
            "temporal_patch_size": 2,
            "window_size": 112,  # pixels: windows of 4x4 LM tokens whatever the patch size
            # Qwen2.5-VL uses full attention in every 8th block (7, 15, 23, 31) and windowed attention
            # elsewhere; a shallow tower keeps the same rule, with at least its last block global.
            "fullatt_block_indexes": list(range(min(vision_depth, 8) - 1, vision_depth, 8)),
            "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # Untied, like Qwen2.5-VL-7B: lm_head and embeddings train separately, and TRL's fp32 lm_head option
        # (`cast_lm_head_to_fp32`) stays available.
        tie_word_embeddings=False,
    )

    with _seeded_fp32(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    patches = {"patch_size": vision_patch_size, "merge_size": vision_merge_size, "temporal_patch_size": 2}
    image_processor = Qwen2VLImageProcessor(size=size, **patches)
    # Videos are not used by PreferThinker, but the processor requires a video processor; keep it as small.
    video_processor = Qwen2VLVideoProcessor(size=dict(size), **patches)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )

    model.save_pretrained(out)
    processor.save_pretrained(out)
    log.info(
        "built tiny Qwen2.5-VL at %s: %s parameters, vocab %d, seed %d",
        out,
        f"{count_parameters(model)['total']:,}",
        len(tokenizer),
        seed,
    )
    return out


# build_tiny_model argument -> (sub-config, config.json key) it is saved under
_BUILD_KEYS = {
    "text_layers": ("text_config", "num_hidden_layers"),
    "hidden_size": ("text_config", "hidden_size"),
    "intermediate_size": ("text_config", "intermediate_size"),
    "num_heads": ("text_config", "num_attention_heads"),
    "num_kv_heads": ("text_config", "num_key_value_heads"),
    "vision_depth": ("vision_config", "depth"),
    "vision_hidden_size": ("vision_config", "hidden_size"),
    "vision_intermediate_size": ("vision_config", "intermediate_size"),
    "vision_heads": ("vision_config", "num_heads"),
    "vision_patch_size": ("vision_config", "patch_size"),
    "vision_merge_size": ("vision_config", "spatial_merge_size"),
}


def build_mismatches(path: str | os.PathLike, build: Mapping[str, Any]) -> list[str]:
    """The ``build_tiny_model`` sizes in ``build`` that the checkpoint at ``path`` does not have, as
    ``"name: checkpoint X, config Y"`` strings (empty when they all match or ``path`` has no config.json).
    A tiny checkpoint is built once and reused, so a size changed in the config after that is otherwise
    silently ignored."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return []
    try:
        saved = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for name, (sub, key) in _BUILD_KEYS.items():
        if name not in build:
            continue
        have = (saved.get(sub) or {}).get(key)
        if have is not None and int(have) != int(build[name]):
            out.append(f"{name}: checkpoint {have}, config {build[name]}")
    return out


def _mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim // 2`` rotary frequencies into (temporal, height, width) in Qwen's 1/4 : 3/8 : 3/8 ratio.

    For the real head_dim 128 this gives [16, 24, 24], Qwen2.5-VL's own value.
    """
    half = head_dim // 2
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    width = half - temporal - height
    if min(height, width) < 1:
        raise ValueError(f"head_dim={head_dim} is too small for M-RoPE (needs at least 6).")
    return [temporal, height, width]
