"""Backbone loading, the tiny offline Qwen2.5-VL, and LoRA helpers.

Three jobs live here, and nothing else:

* ``load_model_and_processor``: load any local Qwen2.5-VL checkpoint (the real 3B/7B, the tiny one built
  below, a full fine-tuning checkpoint, or a LoRA adapter directory) with the Auto classes, pick dtype and
  attention kernel for the machine, optionally freeze the vision tower or add LoRA.
* ``build_tiny_model``: with no weights and no network, build a small but architecturally faithful
  Qwen2.5-VL from a byte-level BPE tokenizer trained locally (``train_tokenizer``) and save it as an
  ordinary Hugging Face directory. Same seed + same texts => byte-identical files.
* ``apply_lora`` / ``lora_config`` / ``merge_lora``: LoRA on the language model (optionally the ViT too)
  and merging an adapter back into a plain checkpoint.

Module layout this file relies on (transformers 5.x, ``Qwen2_5_VLForConditionalGeneration``)::

    model.model.visual           vision tower: patch_embed, blocks[i].attn.{qkv,proj},
                                 blocks[i].mlp.{gate,up,down}_proj, merger (the projector)
    model.model.language_model   embed_tokens, layers[i].self_attn.{q,k,v,o}_proj,
                                 layers[i].mlp.{gate,up,down}_proj, norm
    model.lm_head

Example::

    >>> from preferthinker.modeling import build_tiny_model, load_model_and_processor
    >>> path = build_tiny_model("outputs/models/tiny-qwen2_5_vl", texts=corpus_lines)
    >>> model, processor = load_model_and_processor(path, peft={"enabled": True, "r": 8})
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preferthinker.response import TAGS as _RESPONSE_TAGS

if TYPE_CHECKING:  # heavy imports stay lazy so `import preferthinker.modeling` is cheap
    import peft
    import torch
    import transformers

__all__ = [
    "FORMAT_TAGS",
    "LM_TARGET_MODULES",
    "ModelLoadError",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN_SPECIAL_TOKENS",
    "VISION_EXCLUDE_REGEX",
    "apply_lora",
    "build_tiny_model",
    "build_mismatches",
    "count_parameters",
    "get_vision_tower",
    "load_model_and_processor",
    "lora_config",
    "merge_lora",
    "train_tokenizer",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Facts about Qwen2.5-VL that the tiny model must reproduce
# --------------------------------------------------------------------------------------------------

# Special tokens in the order (and so with the relative ids) of the released Qwen2.5-VL vocabulary.
# The Qwen box/quad/object-ref tokens are left out: nothing in PreferThinker uses them.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # pad (and bos in the model config, as in Qwen)
    "<|im_start|>",
    "<|im_end|>",  # eos: ends every chat turn
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",  # one per merged 28x28 image patch after the processor expands it
    "<|video_pad|>",
)

# Tags of the predict-then-assess response (names owned by `preferthinker.response`), open and close. They are
# ordinary added tokens (not special): each encodes to a single id, and `decode(..., skip_special_tokens=True)`
# keeps them, so rewards can parse decoded text.
FORMAT_TAGS: tuple[str, ...] = tuple(tag for name in _RESPONSE_TAGS for tag in (f"<{name}>", f"</{name}>"))

# Qwen2's pre-tokenisation regex: contractions, letter runs with one optional leading non-letter, single
# digits, punctuation runs with their trailing newlines, newline runs, and whitespace. Paired with a
# byte-level mapping (no regex of its own), it makes every string encodable without an unknown token.
_QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

# The stock Qwen2.5-VL chat template, byte for byte. TRL's SFT `assistant_only_loss` only swaps in its
# training variant (with `{% generation %}` markers) when the processor's template equals this string
# exactly, so do not reformat it. `tests/test_modeling.py` checks it against the copy TRL compares with.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# LoRA targets on the language model: every attention and MLP projection, the usual "all-linear" choice
# for Qwen decoders (lm_head and embeddings excluded).
LM_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Extra targets added when the ViT is adapted too: its fused attention input and output projections
# (`blocks.N.attn.qkv`, `blocks.N.attn.proj`). The ViT MLP already matches gate/up/down_proj above.
_VISION_EXTRA_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj")

# Module names of the vision tower (`model.visual.…`, `base_model.model.model.visual.…`). The ViT MLP reuses
# the LM names gate/up/down_proj, so plain name targets would adapt it too unless it is excluded.
VISION_EXCLUDE_REGEX = r"(.*\.)?visual(\..*)?"

_PIXELS_PER_TOKEN = 28 * 28  # 14x14 patches merged 2x2 (or 7x7 merged 4x4) => one LM token per 28x28 pixels


class ModelLoadError(RuntimeError):
    """A model or processor could not be loaded from the given path; the message says why and how to fix it."""


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2, word_tokens: Iterable[str] = ()
) -> transformers.PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``Qwen2Tokenizer``.

    The pipeline is Qwen2's: NFC normalisation, Qwen2's pre-tokenisation regex, byte-level mapping of the
    256 byte values (so any string encodes, and ``decode(encode(x)) == unicodedata.normalize("NFC", x)``),
    and a byte-level decoder. Because the tokenizer is a real ``Qwen2Tokenizer``, it reloads through
    ``AutoTokenizer``/``AutoProcessor`` unchanged.

    Token ids: the 256 byte symbols, then the learned merges, then ``QWEN_SPECIAL_TOKENS`` (special; eos is
    ``<|im_end|>``, pad is ``<|endoftext|>``), then ``FORMAT_TAGS`` (ordinary added tokens, one id each), then
    ``word_tokens``.

    ``word_tokens`` are domain terms ("Rose Pink", "Art Deco") added as whole-word tokens: each is one id
    wherever it stands. Byte-level BPE otherwise splits a term by what precedes it (``"Rose`` after a quote
    in a profile block, `` Rose`` after a space in a rationale: different ids), so a model trained from
    scratch would have to learn that the two spellings are the same term before it could compare a
    candidate's term with the profile's. Decoding is unchanged (the text round-trips).

    Args:
        texts: training corpus, one document per item. Consumed once; the same texts (same order) give the
            same tokenizer.
        vocab_size: upper bound on ``len(tokenizer)``, special tokens, tags and word tokens included. A small
            corpus learns fewer merges and yields a smaller vocabulary.
        min_frequency: a pair must occur at least this often to become a merge.
        word_tokens: whole-word tokens to add (order kept, duplicates dropped; none may be empty or start or
            end with whitespace).

    Returns:
        A ``transformers.Qwen2Tokenizer`` (a ``PreTrainedTokenizerFast``).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    words = list(dict.fromkeys(str(w) for w in word_tokens))
    bad = [w for w in words if not w or w != w.strip() or w in QWEN_SPECIAL_TOKENS or w in FORMAT_TAGS]
    if bad:
        raise ValueError(f"word_tokens must be non-empty, unpadded and distinct from the special tokens and tags; got {bad[:5]}")
    n_added = len(QWEN_SPECIAL_TOKENS) + len(FORMAT_TAGS) + len(words)
    if vocab_size < 256 + n_added:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must hold the 256 byte symbols "
            f"plus {n_added} special tokens, tags and word tokens."
        )

    backend = Tokenizer(
        BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        min_frequency=min_frequency,
        # All 256 byte symbols are in the vocabulary even if the corpus never uses them: no unknown tokens.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator((str(t) for t in texts), trainer=trainer)

    model_json = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"]]
    # Give the special tokens and tags fixed ids right after the BPE vocabulary (as Qwen does), instead of
    # leaving their order to whatever the wrapper registers first.
    for token in (*QWEN_SPECIAL_TOKENS, *FORMAT_TAGS):
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,  # byte-level: nothing is unknown
        bos_token=None,  # Qwen chat prompts carry no bos
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>",)],
        errors="replace",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TAGS])
    # single_word asks the tokenizer not to match inside a longer word; it does not always hold ("Richness"
    # still becomes "Rich" + "ness" pieces), which costs a few tokens, never a wrong decode.
    tokenizer.add_tokens([AddedToken(w, special=False, normalized=False, single_word=True) for w in words])
    return tokenizer


# --------------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------------


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
            pipeline, so not the tiny default: docs/results.md).
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


def _check_pixels(min_pixels: int | None, max_pixels: int | None) -> None:
    if min_pixels is not None and min_pixels < _PIXELS_PER_TOKEN:
        raise ValueError(f"min_pixels={min_pixels} must be at least {_PIXELS_PER_TOKEN} (one 28x28 merged patch).")
    if min_pixels is not None and max_pixels is not None and max_pixels < min_pixels:
        raise ValueError(f"max_pixels={max_pixels} must be >= min_pixels={min_pixels}.")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _resolve_device(device: str | None) -> str | None:
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    return device


def _resolve_dtype(dtype: Any, device: str | None) -> Any:
    """Map our dtype names to what ``from_pretrained`` takes.

    ``"auto"`` here means bf16 where CUDA will run the model and fp32 on CPU (CPU bf16 is slow and lossy).
    ``"checkpoint"`` keeps the dtype stored in the checkpoint (transformers' own ``"auto"``).
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower()
    if name == "auto":
        on_cuda = device.startswith("cuda") if device else _cuda_available()
        return torch.bfloat16 if on_cuda else torch.float32
    if name == "checkpoint":
        return "auto"
    if name in _DTYPES:
        return getattr(torch, _DTYPES[name])
    raise ValueError(f"dtype={dtype!r} is not one of auto, checkpoint, bf16/bfloat16, fp16/float16, fp32/float32.")


def _resolve_attn(attn_implementation: str, dtype: Any, device: str | None) -> str:
    """``"auto"``: FlashAttention-2 when the package imports, CUDA runs the model and the dtype is half; else SDPA."""
    import torch

    if attn_implementation != "auto":
        return attn_implementation
    on_cuda = device.startswith("cuda") if device else _cuda_available()
    if on_cuda and dtype in (torch.bfloat16, torch.float16):
        try:
            import flash_attn  # noqa: F401
        except Exception:  # ImportError, or a broken CUDA build raising at import
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


def _missing_path_message(path: str, cause: BaseException | None) -> str:
    looks_like_hub = bool(_HUB_ID.match(path))
    first = f"Model path '{path}' does not exist locally"
    if looks_like_hub:
        first += (
            " and could not be loaded from the Hugging Face hub (the hub is unreachable here, or "
            "HF_HUB_OFFLINE=1 is set, and the model is not in the local cache)"
        )
    if cause is not None:
        first += f" [{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}]"
    repo = path if looks_like_hub else "Qwen/Qwen2.5-VL-7B-Instruct"
    local = f"/models/{repo.split('/')[-1]}"
    return (
        f"{first}. To fix it, download the weights on a machine with network access, e.g. "
        f"`huggingface-cli download {repo} --local-dir {local}` (or `hf download ...`), copy the folder here "
        f"and pass `model.path={local}`; or run with the tiny offline default (`model=tiny`), which is built "
        "locally without any download."
    )


def _check_local_dir(path: Path) -> None:
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return  # a checkpoint, or a LoRA adapter (the caller loads its base)
    files = sorted(p.name for p in path.iterdir())[:12]
    raise ModelLoadError(
        f"Directory '{path}' has no config.json, so it is not a Hugging Face model checkpoint "
        f"(it contains: {', '.join(files) or 'nothing'}). Point `model.path` at the folder that holds "
        "config.json and model*.safetensors (for a training run, its output dir or a checkpoint-N subfolder), "
        "or build the tiny model there with `preferthinker.modeling.build_tiny_model`."
    )


def _adapter_base_path(adapter_dir: Path, base_path: str | os.PathLike | None) -> str:
    if base_path is not None:
        return str(base_path)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"LoRA adapter '{adapter_dir}' does not record its base model (base_model_name_or_path is empty); "
            "pass the base checkpoint explicitly (base_path=...)."
        )
    return str(base)


def load_model_and_processor(
    path: str | os.PathLike,
    *,
    dtype: Any = "auto",
    attn_implementation: str = "auto",
    device: str | None = None,
    freeze_vision: bool = False,
    peft: Mapping[str, Any] | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    for_training: bool = False,
    padding_side: str = "left",
) -> tuple[transformers.PreTrainedModel, transformers.ProcessorMixin]:
    """Load a Qwen2.5-VL checkpoint and its processor from a local directory.

    ``path`` may be a full checkpoint (config.json + weights: the released 3B/7B, the tiny model, a
    fine-tuned run) or a LoRA adapter directory (adapter_config.json), in which case the recorded base is
    loaded and the adapter applied (trainable only when ``for_training``). A hub id is tried too, which
    works only where the hub or its local cache is reachable.

    Args:
        path: local directory (or hub id).
        dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``"checkpoint"`` (as stored), ``"bf16"``,
            ``"fp16"``, ``"fp32"`` or a ``torch.dtype``.
        attn_implementation: ``"auto"`` (``flash_attention_2`` if ``flash_attn`` imports, CUDA is present
            and dtype is half, else ``sdpa``), or any value transformers accepts (``sdpa``, ``eager``, ...).
        device: ``None`` leaves the model on CPU for a trainer / accelerate / DeepSpeed to place (the right
            choice for training); ``"auto"`` picks ``cuda`` when available; anything else goes to ``.to()``.
        freeze_vision: set ``requires_grad=False`` on the whole vision tower (``model.model.visual``: patch
            embedding, blocks and the merger/projector).
        peft: LoRA settings (the ``peft`` config group: ``enabled``, ``r``, ``alpha``, ``dropout``,
            ``target_modules``, ``include_vision``). ``None`` or ``enabled: false`` means no LoRA.
        min_pixels, max_pixels: override the image processor's bounds on resized ``height * width``
            (stored as ``size={"shortest_edge": min, "longest_edge": max}``). Keep them equal between
            training and rollout/eval, and save the processor with the checkpoint.
        for_training: ``model.train()`` and ``use_cache=False`` (incompatible with gradient checkpointing);
            otherwise ``model.eval()``.
        padding_side: tokenizer padding side; ``"left"`` for batched generation.

    Returns:
        ``(model, processor)``. With LoRA the model is a ``peft.PeftModel``.

    Raises:
        ModelLoadError: the path does not exist (and is not a loadable hub id), or is not a checkpoint.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path_str = os.fspath(path)
    local = Path(path_str).expanduser()
    device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    attn = _resolve_attn(attn_implementation, torch_dtype, device)

    adapter_dir: Path | None = None
    if local.is_dir():
        _check_local_dir(local)
        if (local / "config.json").is_file():
            source = str(local)
        else:  # a LoRA adapter directory: load the base it records, then the adapter on top
            adapter_dir = local
            source = _adapter_base_path(local, None)
    elif local.exists():
        raise ModelLoadError(f"Model path '{path_str}' is a file, not a checkpoint directory.")
    elif not _HUB_ID.match(path_str):
        raise ModelLoadError(_missing_path_message(path_str, None))
    else:
        source = path_str

    if adapter_dir is not None and not Path(source).is_dir() and not _HUB_ID.match(source):
        raise ModelLoadError(
            f"LoRA adapter '{adapter_dir}' was trained on base model '{source}', which does not exist here. "
            "Copy the base checkpoint here, or merge with merge_lora(adapter_dir, out_dir, base_path=<local base dir>) "
            "and load the merged directory."
        )

    is_local = Path(source).is_dir()
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, attn_implementation=attn)
        processor = AutoProcessor.from_pretrained(adapter_dir if _has_processor(adapter_dir) else source)
    except OSError as err:  # transformers reports missing files as OSError subclasses
        if is_local:
            raise ModelLoadError(f"Could not load the checkpoint in '{source}': {err}") from err
        raise ModelLoadError(_missing_path_message(source, err)) from err
    except Exception as err:  # hub client errors (offline, unknown repo, auth) vary by version
        if is_local:
            raise
        raise ModelLoadError(_missing_path_message(source, err)) from err

    _set_image_bounds(processor, min_pixels, max_pixels)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r} must be 'left' or 'right'.")
    processor.tokenizer.padding_side = padding_side

    if freeze_vision:
        for p in get_vision_tower(model).parameters():
            p.requires_grad_(False)

    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=for_training)
    elif peft is not None:
        settings = _plain_dict(peft)
        if settings.pop("enabled", True):
            model = apply_lora(model, **settings)

    if for_training:
        model.train()
        _base_config(model).use_cache = False
    else:
        model.eval()
    if device is not None:
        model.to(device)
    counts = count_parameters(model)
    log.info(
        "loaded %s (%s, attn=%s): %s params, %s trainable",
        path_str,
        str(torch_dtype).replace("torch.", ""),
        attn,
        f"{counts['total']:,}",
        f"{counts['trainable']:,}",
    )
    return model, processor


def _plain_dict(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A Hydra/OmegaConf node (or any mapping) as a plain dict with plain lists inside."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:
        pass
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in dict(cfg).items()}


def _has_processor(adapter_dir: Path | None) -> bool:
    """TRL saves the processor next to the adapter; prefer it (it carries the training-time pixel bounds)."""
    return adapter_dir is not None and (
        (adapter_dir / "processor_config.json").is_file() or (adapter_dir / "preprocessor_config.json").is_file()
    )


def _set_image_bounds(processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    if min_pixels is None and max_pixels is None:
        return
    image_processor = processor.image_processor
    size = dict(image_processor.size or {})
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    _check_pixels(size.get("shortest_edge"), size.get("longest_edge"))
    image_processor.size = {"shortest_edge": size["shortest_edge"], "longest_edge": size["longest_edge"]}
    # Some processor versions also keep the legacy attributes; keep them in step if present.
    for attr, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        if getattr(image_processor, attr, None) is not None:
            setattr(image_processor, attr, size[key])


def _base_config(model: Any) -> Any:
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def get_vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """Return the Qwen2.5-VL vision tower (``model.model.visual`` in transformers 5.x), unwrapping PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for candidate in (getattr(getattr(base, "model", None), "visual", None), getattr(base, "visual", None)):
        if candidate is not None:
            return candidate
    raise AttributeError(f"{type(base).__name__} has no vision tower at .model.visual or .visual")


# --------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------


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


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Count parameters: ``{"total": ..., "trainable": ...}``.

    Shared tensors (tied embeddings) count once. Under DeepSpeed ZeRO-3, where local tensors are empty
    shards, the full size recorded by DeepSpeed (``ds_numel``) is used.
    """
    total = trainable = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = int(getattr(p, "ds_numel", 0) or p.numel())
        total += n
        if p.requires_grad:
            trainable += n
    return {"total": total, "trainable": trainable}
