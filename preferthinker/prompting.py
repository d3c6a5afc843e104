"""The official prompt: system prompt + user message, as chat messages for Qwen2.5-VL and TRL.

User-message order (official eval script): preference intro, preferred images, non-preference intro,
non-preferred images, candidates intro, "Image A", A, "Image B", B, final instruction.

Images are loaded and resized here, once, with the Qwen2.5-VL convention (``smart_resize``: both
sides multiples of 28, pixel count within [min_pixels, max_pixels]), so training, evaluation and the
Assessor feed the processor identical pixels.

Prompt styles (``prompt=`` config group, configs/prompt/):
- ``official``: the released GRPO script's system prompt (two worked examples, ``"ArtisticMedium"``) and the
  official user texts. Training real checkpoints.
- ``official_eval``: the official eval script's own system prompt wording and the same user texts; the
  official eval also numbers the images (``add_vision_id=True``, ``PromptSpec.vision_ids``). Evaluating the
  released checkpoint the way its numbers were measured.
- ``compact``: a short system prompt and short user texts with the same structure and order. The tiny
  CPU default uses it: the official system prompt alone is ~2k tokens, more than the whole sample.

The official texts are data files under ``preferthinker/prompts/`` (verbatim, source named in its README).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

# --- official texts, verbatim from eval_PreferThinker.py (prompts/official_eval_user_texts.json) ---


def _official_user_texts() -> dict[str, str]:
    return json.loads(resources.files("preferthinker.prompts").joinpath("official_eval_user_texts.json").read_text("utf-8"))


_OFFICIAL = _official_user_texts()
PREF_INTRO: str = _OFFICIAL["pref"]
NONPREF_INTRO: str = _OFFICIAL["nonpref"]
CANDIDATES_INTRO: str = _OFFICIAL["candidates"]  # "following  two": the double space is original
FINAL_INSTRUCTION: str = _OFFICIAL["final"]  # "preferference" is original
OFFICIAL_TEXTS = {"pref": PREF_INTRO, "nonpref": NONPREF_INTRO, "candidates": CANDIDATES_INTRO, "final": FINAL_INSTRUCTION}

# --- compact texts (ours): same structure, a fraction of the tokens ---
COMPACT_SYSTEM = (
    "Predict the user's visual preference profile and non-preference profile (Art Styles, Color, Artistic "
    "Medium, Saturation, Detail) from the reference images. Score Image A and Image B from 0 to 5 on each "
    "element with a rationale, sum the scores, and answer with the image of higher total."
)
COMPACT_TEXTS = {
    "pref": "Preferred images:",
    "nonpref": "Non-preferred images:",
    "candidates": "Candidates:",
    "final": "Profiles, scores, totals, answer.",
}

STYLES = ("official", "official_eval", "compact")
SYSTEMS = ("official", "official_eval", "compact", "none")
MAX_REFERENCES = 5  # official protocol: first 5 preferred and first 5 non-preferred

# Qwen2.5-VL pixel conventions (qwen-vl-utils defaults; the tiny default overrides both to 56*56).
IMAGE_FACTOR = 28
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
# Refuse to decode anything above this many pixels (decompression-bomb guard, ~ 16k x 16k).
MAX_DECODE_PIXELS = 268_435_456


class ImageLoadError(ValueError):
    """An image that is missing, is not an image, is corrupt, or is absurdly large."""


@lru_cache(maxsize=None)
def official_system_prompt() -> str:
    """The released training system prompt, verbatim (two worked examples, ``"ArtisticMedium"`` keys)."""
    return resources.files("preferthinker.prompts").joinpath("official_system_prompt.txt").read_text("utf-8")


@lru_cache(maxsize=None)
def official_eval_system_prompt() -> str:
    """The official eval script's system prompt, verbatim ("five key profile", ``"Artistic Medium"`` keys)."""
    return resources.files("preferthinker.prompts").joinpath("official_eval_system_prompt.txt").read_text("utf-8")


def system_prompt(style: str = "official") -> str | None:
    """System prompt text for a style: ``official`` (GRPO training wording), ``official_eval`` (the eval
    script's wording), ``compact`` or ``none`` (no system turn)."""
    if style == "official":
        return official_system_prompt()
    if style == "official_eval":
        return official_eval_system_prompt()
    if style == "compact":
        return COMPACT_SYSTEM
    if style in ("none", None):
        return None
    raise ValueError(f"unknown system prompt style {style!r}; choose one of {', '.join(SYSTEMS)}")


def smart_resize_dims(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR) -> tuple[int, int]:
    """Qwen2.5-VL's resize rule, computed by qwen-vl-utils' own ``smart_resize``: sides multiples of
    ``factor``, area within [min_pixels, max_pixels], aspect ratio kept as closely as those allow.

    Around it: bad sizes raise ``ImageLoadError`` (qwen-vl-utils divides by zero on an empty side and
    raises a bare ValueError past its 200:1 ratio), and no side drops below ``factor``: qwen-vl-utils
    floors a very thin side to 0 when it shrinks to ``max_pixels``, where the transformers image
    processor keeps one ``factor``; we keep what the processor will compute, so it never resizes again.
    """
    # qwen_vl_utils imports torch and torchvision: load it on first use so `import preferthinker` stays cheap.
    from qwen_vl_utils import smart_resize

    if min(height, width) <= 0:
        raise ImageLoadError(f"image has an empty side ({width}x{height})")
    if max(height, width) / min(height, width) > 200:
        raise ImageLoadError(f"aspect ratio {max(height, width) / min(height, width):.0f}:1 ({width}x{height}) exceeds Qwen2.5-VL's "
                             "200:1 limit; crop the image to a less extreme shape")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels={max_pixels} must be >= min_pixels={min_pixels}")
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return max(factor, h), max(factor, w)


# A transparent pixel becomes this colour: white, the page a PNG with alpha is usually designed on (a logo,
# a sticker); compositing rather than dropping alpha keeps what shows through from being the hidden RGB values.
ALPHA_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _wide_to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit / 32-bit / float greyscale image as 8-bit L, scaled (PIL's own convert clips at 255, which
    turns a 16-bit photo almost white). 16-bit and integer data above 255 are read as 16-bit (/257); float
    data in [0, 1] are scaled by 255."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        arr = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
    elif img.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as upright 8-bit RGB, the one form the processor and every consumer take.

    - EXIF orientation is applied (a phone photo stored sideways with ``Orientation=6`` comes out upright,
      as every viewer shows it), then the tag is gone;
    - alpha (RGBA, LA, PA, a palette with a transparent index) is composited on ``ALPHA_BACKGROUND``;
    - greyscale (L, 1, 16-bit I;16, 32-bit I, float F), palette, CMYK and YCbCr become RGB, wide greyscale
      scaled to 8 bits rather than clipped.
    """
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img) or img
    if img.mode in _WIDE_MODES:
        img = _wide_to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        page = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(page, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _array_image(arr: np.ndarray, what: str) -> Image.Image:
    """An HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16 or float in [0, 1]) as a PIL image."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"{what}: array must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.size == 0:
        raise ImageLoadError(f"{what}: array is empty (shape {arr.shape})")
    if arr.dtype == np.uint16:
        arr = arr / 257.0  # 16-bit data scaled, not clipped
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{what}: array holds NaN or infinite values")
        arr = np.clip(np.rint(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _open_path(path: Path, what: str) -> Image.Image:
    """Decode an image file fully, with PIL's decompression-bomb guard; errors name ``what`` and the path."""
    if not path.exists():
        raise ImageLoadError(f"{what}: file does not exist: {path}")
    if not path.is_file():
        raise ImageLoadError(f"{what}: not a file: {path}")
    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS  # PIL's own guard, restored below
            with Image.open(path) as opened:
                w, h = opened.size
                if w * h > MAX_DECODE_PIXELS:
                    raise ImageLoadError(f"{what}: {w}x{h} pixels exceeds the decode limit ({MAX_DECODE_PIXELS}): {path}")
                opened.load()
                # copy() keeps the EXIF orientation (to_rgb applies it) and the palette transparency
                return opened.copy()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{what}: refused a decompression bomb {path}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for non-images / truncation
        raise ImageLoadError(f"{what}: cannot read {path} as an image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def load_image(
    image: ImageLike,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    what: str = "image",
) -> Image.Image:
    """Open (path, PIL image or array), make it upright 8-bit RGB (``to_rgb``: EXIF orientation, alpha on
    white, greyscale / palette / CMYK / 16-bit) and resize with the Qwen2.5-VL rule (``smart_resize_dims``).

    Raises ImageLoadError naming ``what`` (e.g. "record 3 field imageA (a.png)") for a missing file,
    a file that is not an image, a truncated/corrupt file, a decompression bomb, or an aspect ratio
    beyond 200:1.
    """
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        img = _array_image(image, what)
    else:
        img = _open_path(Path(image), what)
    try:
        img = to_rgb(img)
    except (OSError, ValueError) as e:  # an exotic mode PIL cannot convert
        raise ImageLoadError(f"{what}: cannot convert a {img.mode} image to RGB ({e})") from None
    try:
        h, w = smart_resize_dims(img.height, img.width, min_pixels, max_pixels)
    except ImageLoadError as e:
        raise ImageLoadError(f"{what}: {e}") from None
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return img


def build_messages(
    liked: Sequence[Any],
    disliked: Sequence[Any],
    image_a: Any,
    image_b: Any,
    *,
    style: str = "official",
    system: str | None = "official",
    final_instruction: str | None = None,
    max_refs: int = MAX_REFERENCES,
    embed_images: bool = True,
) -> tuple[list[dict], list[Any]]:
    """Build the chat messages of one sample and the images in the order they appear.

    ``liked``/``disliked``/``image_a``/``image_b`` are whatever the caller wants placed in the image
    blocks (usually PIL images already passed through ``load_image``). Only the first ``max_refs`` of
    each reference list are used (official protocol: 5). When either list is empty the whole reference
    part (both intros and both lists) is left out, as the official eval script does.

    Vision ids ("Picture N: ") are not part of the messages: the chat template writes them when rendered
    with ``add_vision_id=True`` (``PromptSpec.vision_ids``), as the official eval script does.

    With ``embed_images=True`` each image block carries ``{"type": "image", "image": obj}`` (processor
    ``apply_chat_template`` style). With False the blocks are bare ``{"type": "image"}`` placeholders
    and the images travel separately, as TRL's ``images`` column expects; TRL keeps typed blocks that
    already hold image placeholders, so the official interleaving survives.

    Returns ``(messages, images)`` where ``images = liked[:k] + disliked[:k] + [image_a, image_b]``.
    """
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {STYLES}")
    if max_refs < 1:
        raise ValueError(f"max_refs must be >= 1, got {max_refs}")
    liked, disliked = list(liked)[:max_refs], list(disliked)[:max_refs]
    if not liked or not disliked:  # official: `if preferred_paths and non_preferred_paths:` guards the reference part
        liked, disliked = [], []
    texts = COMPACT_TEXTS if style == "compact" else OFFICIAL_TEXTS
    final = texts["final"] if final_instruction is None else final_instruction

    def img(obj: Any) -> dict:
        return {"type": "image", "image": obj} if embed_images else {"type": "image"}

    content: list[dict] = []
    if liked:
        content.append({"type": "text", "text": texts["pref"]})
        content += [img(x) for x in liked]
        content.append({"type": "text", "text": texts["nonpref"]})
        content += [img(x) for x in disliked]
    content.append({"type": "text", "text": texts["candidates"]})
    content += [{"type": "text", "text": "Image A"}, img(image_a), {"type": "text", "text": "Image B"}, img(image_b)]
    content.append({"type": "text", "text": final})

    messages: list[dict] = []
    sys_text = system_prompt(system) if system in SYSTEMS or system is None else system
    if sys_text:
        messages.append({"role": "system", "content": [{"type": "text", "text": sys_text}]})
    messages.append({"role": "user", "content": content})
    return messages, liked + disliked + [image_a, image_b]


def assistant_message(text: str) -> dict:
    """The assistant turn of an SFT sample."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}
