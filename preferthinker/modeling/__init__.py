"""Backbone loading, the tiny offline Qwen2.5-VL, and LoRA helpers.

One module per job; import the public names from here (``from preferthinker.modeling import X``):

* ``loading``: ``load_model_and_processor`` loads any local Qwen2.5-VL checkpoint (the real 3B/7B, the tiny
  one, a full fine-tuning checkpoint, or a LoRA adapter directory) with the Auto classes, picks dtype and
  attention kernel for the machine, optionally freezes the vision tower or adds LoRA; ``ModelLoadError``,
  ``get_vision_tower``, ``count_parameters``.
* ``tokenizer``: the Qwen2.5-VL special tokens, our response tags (``FORMAT_TAGS``), the stock chat template,
  and ``train_tokenizer`` (a byte-level BPE trained locally, wrapped as a ``Qwen2Tokenizer``).
* ``tiny``: ``build_tiny_model`` builds a small but architecturally faithful Qwen2.5-VL with no weights and no
  network and saves it as an ordinary Hugging Face directory (same seed + same texts => byte-identical
  files); ``build_mismatches`` compares a built one with the sizes a config asks for.
* ``lora``: ``lora_config`` / ``apply_lora`` (LoRA on the language model, optionally the ViT) and
  ``merge_lora`` (an adapter merged back into a plain checkpoint).

Example::

    >>> from preferthinker.modeling import build_tiny_model, load_model_and_processor
    >>> path = build_tiny_model("outputs/models/tiny-qwen2_5_vl", texts=corpus_lines)
    >>> model, processor = load_model_and_processor(path, peft={"enabled": True, "r": 8})
"""

from preferthinker.modeling.loading import ModelLoadError, count_parameters, get_vision_tower, load_model_and_processor
from preferthinker.modeling.lora import LM_TARGET_MODULES, VISION_EXCLUDE_REGEX, apply_lora, lora_config, merge_lora
from preferthinker.modeling.tiny import build_mismatches, build_tiny_model
from preferthinker.modeling.tokenizer import FORMAT_TAGS, QWEN2_5_VL_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, train_tokenizer

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
