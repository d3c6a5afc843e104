"""Load a Qwen2.5-VL checkpoint and its processor from a path: the released 3B/7B, the tiny one, a fine-tuned run
or a LoRA adapter directory; dtype and attention kernel picked for the machine, with errors that say how to fix
a missing or wrong path. Also the small facts about a loaded model other code asks: its vision tower and its
parameter counts.

Module layout this relies on (transformers 5.x, ``Qwen2_5_VLForConditionalGeneration``)::

    model.model.visual           vision tower: patch_embed, blocks[i].attn.{qkv,proj},
                                 blocks[i].mlp.{gate,up,down}_proj, merger (the projector)
    model.model.language_model   embed_tokens, layers[i].self_attn.{q,k,v,o}_proj,
                                 layers[i].mlp.{gate,up,down}_proj, norm
    model.lm_head
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    import transformers

log = logging.getLogger("preferthinker.modeling")

_PIXELS_PER_TOKEN = 28 * 28  # 14x14 patches merged 2x2 (or 7x7 merged 4x4) => one LM token per 28x28 pixels


class ModelLoadError(RuntimeError):
    """A model or processor could not be loaded from the given path; the message says why and how to fix it."""


def _check_pixels(min_pixels: int | None, max_pixels: int | None) -> None:
    if min_pixels is not None and min_pixels < _PIXELS_PER_TOKEN:
        raise ValueError(f"min_pixels={min_pixels} must be at least {_PIXELS_PER_TOKEN} (one 28x28 merged patch).")
    if min_pixels is not None and max_pixels is not None and max_pixels < min_pixels:
        raise ValueError(f"max_pixels={max_pixels} must be >= min_pixels={min_pixels}.")



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
            from preferthinker.modeling.lora import apply_lora  # lora.py imports this module (merge_lora loads)

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
