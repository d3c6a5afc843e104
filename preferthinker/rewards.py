"""GRPO reward functions for the predict-then-assess response, named in a registry, weighted by config.

Every reward keeps TRL's shape, ``fn(completions, **kwargs) -> list[float | None]``, returns a raw score
in [0, 1], and is combined by TRL's ``reward_weights``. With ``configs/reward/paper.yaml``
(accuracy 1.0, format 0.3, pref_profile 0.35, nonpref_profile 0.35) the largest total reward is
1.0 + 0.3 + 0.7 = 2.0, the paper's ``w_a*r_acc + w_f*r_format + w_p*r_predict`` with ``r_predict`` the
mean of the two profile sides.

Rewards (``REWARDS``; name = TRL metric key ``rewards/<name>/mean``), each with its ``None`` case:

* ``accuracy``: 1.0 if the single ``<answer>`` block names the labelled image; None without a label.
* ``format``: 1.0 if the four-block contract holds exactly (official fullmatch) and each block opens
  and closes once; never None.
* ``pref_profile`` / ``nonpref_profile``: ``(w_text*s_text + w_img*s_img) / (w_text + w_img)`` against
  the gold profile of that side; None without a gold profile (real-user data).
* ``consistency`` (beyond the paper, off by default): 1.0 if the answer names the larger total and each
  total equals the sum of its five scores; never None.

``None`` means "this reward does not apply to this sample" (TRL turns it into NaN and ``nansum`` skips
it); ``0.0`` means "the output is wrong or malformed". The two are never mixed up.

Hack defences (each has a test in ``tests/test_rewards.py``; details in ``docs/rewards.md``):

* output longer than ``max_chars`` characters: every reward that applies is 0.0, nothing is parsed or embedded;
* several ``<answer>`` (or any other) blocks, or stray closing tags: format 0.0, and accuracy 0.0 when
  the answer block is not exactly one (the official regex alone accepts them);
* "Image A or Image B", "Image A/Image B": the parser reads no answer, accuracy 0.0;
* text outside the blocks: format 0.0;
* an empty profile block (no term at all) or a missing one: that side scores 0.0;
* the same profile in both blocks: both sides score 0.0 (a copy can be right for one side at most);
* a block present but not readable as five elements: ``s_text`` on its cleaned raw text (as the released
  code does), no image term, times ``unparsed_factor`` (0.5), so it never beats a readable profile of
  equal text similarity.

The response is read by ``preferthinker.response.parse_response`` only; this module has no format regex.

Example (TRL shape; completions may be plain strings or conversational message lists)::

    >>> from preferthinker.rewards import build_rewards
    >>> funcs, weights = build_rewards({"names": ["accuracy", "format"], "weights": [1.0, 0.3]})
    >>> [f.__name__ for f in funcs], weights
    (['accuracy', 'format'], [1.0, 0.3])
    >>> funcs[0]([[{"role": "assistant", "content": "<answer>Image B</answer>"}]], solution=["Image B"])
    [1.0]
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from preferthinker.profile import ELEMENTS, canonicalize_profile
from preferthinker.response import ANSWER_TAG, ANSWERS, NONPREF_TAG, PREF_TAG, TAGS, Assessment, parse_response
from preferthinker.runtime import ConfigError

log = logging.getLogger("preferthinker.rewards")

__all__ = [
    "REWARDS",
    "AccuracyReward",
    "ConsistencyReward",
    "DiffusersImageBackend",
    "EmbeddingPerceptualMetric",
    "FormatReward",
    "ImageQuery",
    "PredictionConfig",
    "ProfileReward",
    "ProfileScorer",
    "RewardConfig",
    "SyntheticImageBackend",
    "build_rewards",
    "completion_text",
    "reward_report",
    "validate_reward_config",
]

DEFAULT_MAX_CHARS = 16_000  # ~4x a full CoT (the official examples: 3.4k, 4.3k chars); 2048 Qwen tokens ~ 8-10k chars
MAX_PROFILE_CHARS = 1_000  # an unreadable profile block is cut to this before embedding (MiniLM reads 256 tokens)
IMAGE_BACKENDS = ("none", "synthetic", "diffusers")
DIFFUSERS_TARGETS = ("rendered", "reference_image")

# Gold-profile column and reference-image column(s) per side.
_SIDES = {
    "pref": {"tag": PREF_TAG, "gold": "prefer_attributes", "refs": ("prefered_images", "preferred_images")},
    "nonpref": {"tag": NONPREF_TAG, "gold": "non_prefer_attributes", "refs": ("non_prefered_images", "non_preferred_images")},
}


# ================================================================================================
# reading completions and dataset columns


def completion_text(completion: Any) -> str:
    """The assistant text of one completion, for both TRL shapes.

    * standard: ``"<visual preference profile>..."``;
    * conversational: ``[{"role": "assistant", "content": "..."}]`` (content may also be a list of
      ``{"type": "text", "text": ...}`` blocks). Several assistant messages are joined with newlines.

    Anything else (None, numbers) reads as "" so that it scores 0.0 instead of crashing the step.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and not isinstance(completion, (bytes, bytearray)):
        parts: list[str] = []
        for message in completion:
            if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, Sequence):
                parts.extend(str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type", "text") == "text")
        return "\n".join(parts)
    return ""


@lru_cache(maxsize=2048)
def _parse(text: str) -> Assessment:
    # Several rewards read the same completion in one step; parse it once. Callers never mutate the result.
    return parse_response(text)


def _blocks_exact(a: Assessment, tag: str | None = None) -> bool:
    """Each block (or the one ``tag``) opens and closes exactly once. ``format_ok`` alone accepts a
    second ``<answer>`` block and text hidden behind a stray closing tag (``...</answer> junk </answer>``),
    because the official regex's ``.*?`` may stretch over them."""
    tags = TAGS if tag is None else (tag,)
    return all(a.tag_counts.get(t, 0) == 1 and a.raw.count(f"</{t}>") == 1 for t in tags)


def _label(value: Any, row: int) -> str | None:
    """Dataset label -> "Image A" | "Image B"; None when the row has no label (the reward does not apply).
    Accepts "Image B", "image b.", "<answer> Image B </answer>" (the released GRPO file's form)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"column 'solution', row {row}: expected a string like 'Image A', got {type(value).__name__}")
    if "<answer>" in value:
        answer = parse_response(value).answer
        if answer is not None:
            return answer
    cleaned = " ".join(value.split()).rstrip(".").strip().lower()
    for ans in ANSWERS:
        if cleaned == ans.lower():
            return ans
    raise ValueError(
        f"column 'solution', row {row}: expected 'Image A' or 'Image B' (optionally inside <answer></answer>), "
        f"got {value[:80]!r}"
    )


def _gold_profile(value: Any, column: str, row: int) -> dict[str, str] | None:
    """Gold profile column -> canonical dict, or None when the row has none (real-user data).
    ``datasets`` stores a missing struct either as None or as a dict of None values: both mean "no gold"."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        blank = [k for k, v in value.items() if v is None or (isinstance(v, str) and not v.strip())]
        if len(blank) == len(value):
            return None
        if blank:
            raise ValueError(f"column {column!r}, row {row}: gold profile has no term for {blank}")
    elif isinstance(value, str):
        if not value.strip():
            return None
        if value.lstrip().startswith("{"):  # a JSON-encoded dict (some JSONL exports store it so)
            try:
                return _gold_profile(json.loads(value), column, row)
            except json.JSONDecodeError as exc:
                raise ValueError(f"column {column!r}, row {row}: not valid JSON ({exc})") from None
    else:
        raise ValueError(f"column {column!r}, row {row}: expected a dict or a 'Key: term, ...' string, got {type(value).__name__}")
    try:
        return canonicalize_profile(value)
    except ValueError as exc:
        raise ValueError(f"column {column!r}, row {row}: {exc}") from None


def _column(kwargs: Mapping[str, Any], names: Sequence[str], n: int) -> list[Any] | None:
    """The first present column of ``names`` as a list of length n (None if no such column)."""
    for name in names:
        if name in kwargs and kwargs[name] is not None:
            values = list(kwargs[name])
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows for {n} completions")
            return values
    return None


def _first(value: Any) -> Any:
    """First entry of a per-row list column (``reference_prompt_list``, ``prefered_images``); a bare
    string is its own first entry; None for an empty or missing value."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value or None
    if isinstance(value, Sequence):
        return value[0] if len(value) else None
    return value  # e.g. a PIL image


def _stable_seed(text: str) -> int:
    # hash() is salted per process; sha256 gives the same seed on every rank and every run.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


class _MetricSink:
    """Collects sub-scores and hands them to TRL's ``log_metric(name, value)`` (means over applicable samples)."""

    def __init__(self, prefix: str, log_metric: Callable[[str, float], None] | None):
        self.prefix, self.log_metric = prefix, log_metric if callable(log_metric) else None

    def mean(self, name: str, values: Sequence[float | None]) -> None:
        vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if vals and self.log_metric is not None:
            self.log_metric(f"rewards/{self.prefix}/{name}", float(np.mean(vals)))


# ================================================================================================
# simple rewards


class _Reward:
    """Base of the reward callables: a fixed ``__name__`` (TRL logs ``rewards/<__name__>/mean|std``) and
    plain attributes only, so instances pickle (multi-process data loaders, ``copy.deepcopy``)."""

    name = "reward"

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS):
        if not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigError(f"reward.max_chars must be a positive integer (characters), got {max_chars!r}")
        self.__name__ = self.name
        self.max_chars = max_chars

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_chars={self.max_chars})"

    def _texts(self, completions: Sequence[Any]) -> list[str]:
        return [completion_text(c) for c in completions]


class AccuracyReward(_Reward):
    """1.0 when the answer block names the labelled image, else 0.0; None for rows without a label.

    Stricter than the released code in one way: the completion must hold exactly one ``<answer>`` block
    (the released code reads the last one, so a model could hedge with several).

    Example::

        >>> AccuracyReward()(["<answer>Image A</answer>", "<answer>Image A or Image B</answer>"],
        ...                  solution=["Image A", "Image A"])
        [1.0, 0.0]
    """

    name = "accuracy"

    # **kwargs: TRL passes every dataset column plus prompts, completion_ids, trainer_state, log_extra.
    def __call__(self, completions, solution=None, log_metric=None, **kwargs) -> list[float | None]:
        if solution is None:
            raise ValueError("the accuracy reward needs a 'solution' column ('Image A' / 'Image B') in the dataset")
        labels = [_label(s, i) for i, s in enumerate(solution)]
        texts = self._texts(completions)
        out: list[float | None] = []
        readable: list[float] = []
        for text, label in zip(texts, labels, strict=True):
            if label is None:
                out.append(None)  # nothing to compare with
                continue
            if len(text) > self.max_chars:
                out.append(0.0)
                readable.append(0.0)
                continue
            a = _parse(text)
            ok = _blocks_exact(a, ANSWER_TAG) and a.answer is not None
            readable.append(float(ok))
            out.append(1.0 if ok and a.answer == label else 0.0)
        sink = _MetricSink(self.name, log_metric)
        sink.mean("answer_accuracy", out)
        sink.mean("answer_readable_rate", readable)
        return out


class FormatReward(_Reward):
    """1.0 when the completion is exactly the four-block contract (official ``re.fullmatch``) with every
    block opened and closed once; else 0.0. Never None: every completion has a format.

    Example::

        >>> FormatReward()(["hello <answer>Image A</answer>"])
        [0.0]
    """

    name = "format"

    def __call__(self, completions, log_metric=None, **kwargs) -> list[float | None]:
        out: list[float | None] = []
        official: list[float] = []
        oversize: list[float] = []
        for text in self._texts(completions):
            big = len(text) > self.max_chars
            oversize.append(float(big))
            if big:
                out.append(0.0)
                official.append(0.0)
                continue
            a = _parse(text)
            official.append(float(a.format_ok))
            out.append(1.0 if a.format_ok and _blocks_exact(a) else 0.0)
        sink = _MetricSink(self.name, log_metric)
        sink.mean("format_rate", out)
        sink.mean("official_regex_rate", official)  # > format_rate: the model is exploiting the loose regex
        sink.mean("oversize_rate", oversize)
        return out


class ConsistencyReward(_Reward):
    """1.0 when the per-element scores sum to the written totals and the answer names the larger total
    (``Assessment.consistent``), with the think and answer blocks present once; else 0.0.
    Beyond the paper (its CoT data is filtered for this); off in ``paper.yaml``.

    Example::

        >>> ConsistencyReward()(["<answer>Image A</answer>"])
        [0.0]
    """

    name = "consistency"

    def __call__(self, completions, log_metric=None, **kwargs) -> list[float | None]:
        out: list[float | None] = []
        for text in self._texts(completions):
            if len(text) > self.max_chars:
                out.append(0.0)
                continue
            a = _parse(text)
            ok = a.consistent and _blocks_exact(a, "think") and _blocks_exact(a, ANSWER_TAG)
            out.append(1.0 if ok else 0.0)
        _MetricSink(self.name, log_metric).mean("consistent_rate", out)
        return out


# ================================================================================================
# similarity-aware prediction reward: configuration


@dataclass
class SyntheticBackendConfig:
    size: int = 64  # side of the rendered images in pixels (small: the metric is pixel statistics)
    oov: str = "nearest"  # predicted term outside the synthetic vocabulary: "nearest" term by text, or "zero"


@dataclass
class DiffusersBackendConfig:
    pipeline_path: str | None = None  # local diffusers pipeline folder (e.g. FLUX.1-schnell)
    metric_path: str | None = None  # DreamSim cache folder, or a local transformers vision model folder
    device: str = "cpu"
    steps: int = 4
    size: int = 512
    guidance: float = 0.0
    seed: int = 1024
    target: str = "rendered"  # "rendered": gold profile rendered too (paper); "reference_image": released code
    image_root: str | None = None  # folder that relative reference-image paths are joined to
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    batch_size: int = 4  # prompts per pipeline call
    cache_size: int = 256  # rendered images kept in memory, keyed by prompt


@dataclass
class PredictionConfig:
    """Settings of the similarity-aware prediction reward (``reward.prediction`` in the config)."""

    w_text: float = 0.5
    w_img: float = 0.5
    text_model: str | None = None  # local SentenceTransformer folder; None: the bundled all-MiniLM-L6-v2
    text_device: str = "cpu"
    text_batch_size: int = 64
    image_backend: str = "synthetic"  # none | synthetic | diffusers
    unparsed_factor: float = 0.5  # multiplier for a present but unreadable profile block
    synthetic: SyntheticBackendConfig = field(default_factory=SyntheticBackendConfig)
    diffusers: DiffusersBackendConfig = field(default_factory=DiffusersBackendConfig)


@dataclass
class RewardConfig:
    names: list[str]
    weights: list[float]
    max_chars: int = DEFAULT_MAX_CHARS
    prediction: PredictionConfig = field(default_factory=PredictionConfig)


def _to_plain(cfg: Any) -> Any:
    """OmegaConf DictConfig/ListConfig -> plain containers (without importing omegaconf eagerly)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _fill(cls, data: Any, where: str):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys with the list of known ones."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**dict(data))


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def validate_reward_config(cfg: Any) -> RewardConfig:
    """Check a reward config at start-up; every error names the key, the value and the fix.

    Shape (``configs/reward/*.yaml``)::

        names: [accuracy, format, pref_profile, nonpref_profile]
        weights: [1.0, 0.3, 0.35, 0.35]      # TRL reward_weights, one per name, >= 0
        max_chars: 16000                      # longer completions score 0 everywhere
        prediction: {w_text: 0.5, w_img: 0.5, text_model: null, image_backend: synthetic, ...}
    """
    if isinstance(cfg, RewardConfig):
        cfg = {"names": cfg.names, "weights": cfg.weights, "max_chars": cfg.max_chars, "prediction": cfg.prediction}
    cfg = _to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"reward config must be a mapping with 'names' and 'weights', got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - {"names", "weights", "max_chars", "prediction"})
    if unknown:
        raise ConfigError(f"reward: unknown key(s) {unknown}; known keys: ['max_chars', 'names', 'prediction', 'weights']")
    names, weights = cfg.get("names"), cfg.get("weights")
    if not isinstance(names, Sequence) or isinstance(names, str) or not names:
        raise ConfigError(f"reward.names must be a non-empty list of reward names from {sorted(REWARDS)}, got {names!r}")
    names = [str(n) for n in names]
    for n in names:
        if ":" in n and n not in REWARDS:
            _register_plugin(n)
    bad = [n for n in names if n not in REWARDS]
    if bad:
        raise ConfigError(f"reward.names: unknown reward(s) {bad}; choose from {sorted(REWARDS)} or name your own as "
                          f"'package.module:factory'")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"reward.names lists {dupes} more than once; list each reward once and set its weight instead")
    if weights is None:
        raise ConfigError(f"reward.weights is missing: give one weight per name in {names}")
    if not isinstance(weights, Sequence) or isinstance(weights, str):
        raise ConfigError(f"reward.weights must be a list of numbers, got {weights!r}")
    if len(weights) != len(names):
        raise ConfigError(
            f"reward.weights has {len(weights)} entries but reward.names has {len(names)} ({names}); "
            "give exactly one weight per name"
        )
    weights = [_number(w, f"reward.weights[{i}] ({names[i]})") for i, w in enumerate(weights)]
    neg = [(n, w) for n, w in zip(names, weights) if w < 0]
    if neg:
        raise ConfigError(f"reward.weights must be >= 0 (a penalty is a low score, not a negative weight); got {neg}")
    max_chars = cfg.get("max_chars", DEFAULT_MAX_CHARS)
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ConfigError(f"reward.max_chars must be a positive integer (characters), got {max_chars!r}")

    raw = cfg.get("prediction")
    if isinstance(raw, PredictionConfig):
        pred = raw
    else:
        raw = dict(raw or {})
        syn = _fill(SyntheticBackendConfig, raw.pop("synthetic", None), "reward.prediction.synthetic")
        dif = _fill(DiffusersBackendConfig, raw.pop("diffusers", None), "reward.prediction.diffusers")
        pred = _fill(PredictionConfig, raw, "reward.prediction")
        pred.synthetic, pred.diffusers = syn, dif
    pred.w_text = _number(pred.w_text, "reward.prediction.w_text")
    pred.w_img = _number(pred.w_img, "reward.prediction.w_img")
    pred.unparsed_factor = _number(pred.unparsed_factor, "reward.prediction.unparsed_factor")
    uses_profiles = any(n in ("pref_profile", "nonpref_profile") for n in names)
    if pred.w_text < 0 or pred.w_img < 0:
        raise ConfigError(f"reward.prediction.w_text and w_img must be >= 0, got {pred.w_text} and {pred.w_img}")
    if pred.w_text + pred.w_img <= 0:
        raise ConfigError("reward.prediction: w_text + w_img must be > 0 (e.g. w_text: 0.5, w_img: 0.5)")
    if pred.image_backend not in IMAGE_BACKENDS:
        raise ConfigError(f"reward.prediction.image_backend must be one of {list(IMAGE_BACKENDS)}, got {pred.image_backend!r}")
    if pred.image_backend == "none" and pred.w_text <= 0:
        raise ConfigError(
            "reward.prediction.image_backend is 'none' but w_text is 0: the prediction reward would be empty; "
            "set w_text > 0 or pick an image backend"
        )
    if not 0.0 <= pred.unparsed_factor <= 1.0:
        raise ConfigError(f"reward.prediction.unparsed_factor must be in [0, 1], got {pred.unparsed_factor}")
    if not isinstance(pred.text_batch_size, int) or pred.text_batch_size < 1:
        raise ConfigError(f"reward.prediction.text_batch_size must be a positive integer, got {pred.text_batch_size!r}")
    if pred.synthetic.oov not in ("nearest", "zero"):
        raise ConfigError(f"reward.prediction.synthetic.oov must be 'nearest' or 'zero', got {pred.synthetic.oov!r}")
    if isinstance(pred.synthetic.size, bool) or not isinstance(pred.synthetic.size, int) or not 28 <= pred.synthetic.size <= 512:
        raise ConfigError(f"reward.prediction.synthetic.size must be an integer in 28..512 pixels, got {pred.synthetic.size!r}")
    d = pred.diffusers
    if uses_profiles and pred.image_backend == "diffusers" and pred.w_img > 0:
        for key in ("pipeline_path", "metric_path"):
            if not getattr(d, key):
                raise ConfigError(
                    f"reward.prediction.diffusers.{key} is required with image_backend 'diffusers' "
                    "(a local folder; no hub access), or set image_backend: none"
                )
    if d.target not in DIFFUSERS_TARGETS:
        raise ConfigError(f"reward.prediction.diffusers.target must be one of {list(DIFFUSERS_TARGETS)}, got {d.target!r}")
    if d.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"reward.prediction.diffusers.dtype must be auto|float32|bfloat16|float16, got {d.dtype!r}")
    for key in ("steps", "size", "batch_size", "cache_size"):
        value = getattr(d, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "cache_size" else 1):
            raise ConfigError(f"reward.prediction.diffusers.{key} must be a positive integer, got {value!r}")
    return RewardConfig(names=names, weights=weights, max_chars=max_chars, prediction=pred)


# ================================================================================================
# image backends


@dataclass
class ImageQuery:
    """One predicted profile to compare with its gold profile in image space."""

    pred: dict[str, str]
    true: dict[str, str]
    side: str  # "pref" | "nonpref"
    content_seed: int | None = None  # synthetic backend: the content both images share
    reference_prompt: str | None = None  # diffusers backend: T2I prompt of the first reference image
    reference_image: Any = None  # diffusers target "reference_image": a path or a PIL image


class SyntheticImageBackend:
    """s_img with the project's synthetic renderer, fully offline.

    Both profiles are rendered on the same content (``ImageQuery.content_seed``) at ``size`` pixels and
    compared with :func:`synthetic_image_similarity`. A predicted term outside the renderer's vocabulary
    is mapped to the nearest vocabulary term of its element by MiniLM text similarity (``oov="nearest"``),
    or makes s_img 0.0 (``oov="zero"``); either way the rate is logged as ``oov_rate``.
    """

    def __init__(self, size: int = 64, oov: str = "nearest", embedder_fn: Callable[[], Any] | None = None):
        self.size, self.oov = size, oov
        self.embedder_fn = embedder_fn
        self.last_oov_rate: float | None = None
        self._renderer = None
        self._vocab: dict[str, list[str]] | None = None
        self._vocab_lower: dict[str, dict[str, str]] = {}
        self._nearest_cache: dict[tuple[str, str], str] = {}
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_renderer"], state["_vocab"], state["_vocab_lower"] = None, None, {}
        state["_cache"] = OrderedDict()
        return state

    def _load(self) -> None:
        if self._renderer is not None:
            return
        from preferthinker.data.synthetic import render as render_mod

        self._renderer = render_mod
        self._vocab = _synthetic_vocabulary(render_mod)
        self._vocab_lower = {e: {t.lower(): t for t in terms} for e, terms in self._vocab.items()}

    def _nearest(self, element: str, term: str) -> str | None:
        """Map one predicted term into the vocabulary of ``element``; None when it cannot be mapped."""
        key = " ".join(term.split()).lower()
        exact = self._vocab_lower[element].get(key)
        if exact is not None:
            return exact
        if self.oov == "zero" or self.embedder_fn is None or not key:
            return None
        cached = self._nearest_cache.get((element, key))
        if cached is None:
            terms = self._vocab[element]
            emb = self.embedder_fn().embed([key] + [t.lower() for t in terms])
            cached = terms[int(np.argmax(emb[1:] @ emb[0]))]
            if len(self._nearest_cache) < 100_000:
                self._nearest_cache[(element, key)] = cached
        return cached

    def similarity(self, queries: Sequence[ImageQuery]) -> list[float | None]:
        self._load()
        out: list[float | None] = []
        oov = 0
        for q in queries:
            if q.content_seed is None:
                out.append(None)  # no shared content to render on: text-only for this sample
                continue
            mapped: dict[str, str] = {}
            for element in ELEMENTS:
                first = _first_term(q.pred[element])
                term = self._nearest(element, first)
                if term is None or term.lower() != " ".join(first.split()).lower():
                    oov += 1
                if term is None:
                    break
                mapped[element] = term
            if len(mapped) < len(ELEMENTS):
                out.append(0.0)  # oov == "zero": an unrenderable profile is a wrong profile
                continue
            truth = {}
            for element in ELEMENTS:
                first = _first_term(q.true[element])
                truth[element] = self._vocab_lower[element].get(" ".join(first.split()).lower())
            if None in truth.values():
                out.append(None)  # gold outside the synthetic vocabulary (not synthetic data): no s_img
                continue
            img_p = self._render(mapped, q.content_seed)
            img_t = self._render(truth, q.content_seed)
            out.append(synthetic_image_similarity(img_p, img_t))
        n_terms = len(ELEMENTS) * sum(q.content_seed is not None for q in queries)
        self.last_oov_rate = oov / n_terms if n_terms else None
        return out

    def _render(self, profile: dict[str, str], seed: int) -> np.ndarray:
        # The gold image is the same for all G completions of a prompt: keep recent renders.
        key = (int(seed), tuple(profile[e] for e in ELEMENTS))
        img = self._cache.get(key)
        if img is None:
            img = _render_synthetic(self._renderer, profile, int(seed), self.size)
            self._cache[key] = img
            while len(self._cache) > 512:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return img


def _first_term(value: str) -> str:
    """The first term of a (possibly multi-term, "Cubism, Pop Art") value: the one that gets drawn."""
    from preferthinker.profile import split_terms

    terms = split_terms(str(value).replace('"', ""))
    return terms[0].rstrip(".").strip() if terms else ""


def synthetic_image_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """A cheap perceptual similarity in [0, 1] for two HxWx3 uint8 images rendered on the same content.

    The mean of three terms, each in [0, 1]:
    * layout: 1 - mean |a - b| of 16x16 box-downsampled images (colour and composition);
    * palette: intersection of 8x8 hue-saturation histograms (colour and saturation, position-free);
    * texture: 1 - relative difference of the mean gradient magnitude (detail, medium).
    """
    a = np.asarray(a, dtype=np.float32) / 255.0
    b = np.asarray(b, dtype=np.float32) / 255.0
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"images must share one HxWx3 shape, got {a.shape} and {b.shape}")
    a, b = a[..., :3], b[..., :3]
    layout = 1.0 - float(np.mean(np.abs(_box_down(a, 16) - _box_down(b, 16))))
    ha, hb = _hs_hist(a), _hs_hist(b)
    palette = float(np.minimum(ha, hb).sum())
    ga, gb = _grad_energy(a), _grad_energy(b)
    texture = 1.0 - abs(ga - gb) / max(ga, gb, 1e-6)
    return float(np.clip((layout + palette + texture) / 3.0, 0.0, 1.0))


def _box_down(img: np.ndarray, side: int) -> np.ndarray:
    h, w, c = img.shape
    hs, ws = max(h // side, 1), max(w // side, 1)
    img = img[: hs * (h // hs), : ws * (w // ws)]
    return img.reshape(h // hs, hs, w // ws, ws, c).mean(axis=(1, 3))


def _hs_hist(img: np.ndarray, bins: int = 8) -> np.ndarray:
    mx, mn = img.max(axis=2), img.min(axis=2)
    delta = mx - mn
    sat = np.where(mx > 1e-6, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    safe = np.maximum(delta, 1e-6)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6.0
    hue = np.where(delta > 1e-6, hue, 0.0)
    hist, _, _ = np.histogram2d(hue.ravel(), sat.ravel(), bins=bins, range=[[0, 1], [0, 1]])
    return hist / max(hist.sum(), 1.0)


def _grad_energy(img: np.ndarray) -> float:
    gray = img.mean(axis=2)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def _synthetic_vocabulary(render_mod) -> dict[str, list[str]]:
    """{element: [terms]} the synthetic renderer knows how to draw (its ``vocabulary.yaml``)."""
    from preferthinker.data.synthetic.vocabulary import load_vocabulary

    vocab = load_vocabulary()
    return {e: vocab.names(e) for e in ELEMENTS}


def _render_synthetic(render_mod, profile: dict[str, str], seed: int, size: int) -> np.ndarray:
    """One image (size x size x 3 uint8) of ``profile`` (vocabulary terms) drawn on content ``seed``."""
    return np.asarray(render_mod.render_array(int(seed), profile, size), dtype=np.uint8)


class EmbeddingPerceptualMetric:
    """DreamSim-like similarity: cosine of image embeddings from a local transformers vision model
    (DINO/DINOv2/ViT/CLIP folder with ``config.json``), clamped to [0, 1]. DreamSim itself is an
    ensemble of such embeddings fine-tuned on human similarity judgements, with distance = 1 - cosine."""

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu"):
        import torch
        from transformers import AutoModel

        self.device = device
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True).to(device).eval()
        cfg = getattr(self.model.config, "vision_config", None) or self.model.config
        self.image_size = int(getattr(cfg, "image_size", 224) or 224)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        proc = Path(model_path) / "preprocessor_config.json"
        if proc.is_file():
            pc = json.loads(proc.read_text())
            self.mean = tuple(pc.get("image_mean", self.mean))
            self.std = tuple(pc.get("image_std", self.std))
        self._torch = torch

    def _embed(self, images: Sequence[Any]):
        torch = self._torch
        arrs = []
        for im in images:
            im = im.convert("RGB").resize((self.image_size, self.image_size), resample=3)  # 3 = bicubic
            arrs.append(np.asarray(im, dtype=np.float32) / 255.0)
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
        x = (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        x = x.to(self.device, dtype=next(self.model.parameters()).dtype)
        with torch.inference_mode():
            if hasattr(self.model, "get_image_features"):
                emb = self.model.get_image_features(pixel_values=x)
                emb = getattr(emb, "pooler_output", emb)
            else:
                out = self.model(pixel_values=x)
                pooled = getattr(out, "pooler_output", None)
                if pooled is None:
                    hidden = out.last_hidden_state
                    pooled = hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden[:, 0]
                emb = pooled
        return torch.nn.functional.normalize(emb.float().flatten(1), dim=-1)

    def similarity(self, images_a: Sequence[Any], images_b: Sequence[Any]) -> list[float]:
        ea, eb = self._embed(images_a), self._embed(images_b)
        return [float(v) for v in (ea * eb).sum(-1).clamp(0.0, 1.0).cpu()]


class DreamSimMetric:
    """The paper's metric: s_img = 1 - DreamSim distance, from a local DreamSim cache folder
    (``dreamsim`` installed; weights already in ``cache_dir``, nothing downloaded)."""

    _TYPES = ("ensemble", "dino_vitb16", "dinov2_vitb14", "open_clip_vitb32", "clip_vitb32", "synclr_vitb16")

    def __init__(self, cache_dir: str | os.PathLike, device: str = "cpu"):
        from dreamsim import dreamsim

        kind = next((t for t in self._TYPES if (Path(cache_dir) / f"{'ensemble' if t == 'ensemble' else t + '_single'}_lora").is_dir()), None)
        if kind is None:
            raise FileNotFoundError(f"no DreamSim LoRA folder (e.g. ensemble_lora) in {cache_dir}")
        self.model, self.preprocess = dreamsim(pretrained=True, device=device, cache_dir=str(cache_dir), dreamsim_type=kind)
        self.device = device

    def similarity(self, images_a: Sequence[Any], images_b: Sequence[Any]) -> list[float]:
        import torch

        out = []
        with torch.inference_mode():
            for a, b in zip(images_a, images_b, strict=True):
                d = self.model(self.preprocess(a).to(self.device), self.preprocess(b).to(self.device))
                out.append(float(min(max(1.0 - float(d), 0.0), 1.0)))
        return out


def load_perceptual_metric(path: str | os.PathLike, device: str = "cpu"):
    """DreamSim when ``path`` is a DreamSim cache and ``dreamsim`` is installed, else an embedding model."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"perceptual metric folder not found: {p} (reward.prediction.diffusers.metric_path)")
    if any(p.glob("*_lora")):
        try:
            return DreamSimMetric(p, device)
        except ImportError:
            log.warning("%s looks like a DreamSim cache but 'dreamsim' is not installed; trying it as an embedding model", p)
    if (p / "config.json").is_file():
        return EmbeddingPerceptualMetric(p, device)
    raise FileNotFoundError(
        f"{p} is neither a DreamSim cache (ensemble_lora/ + backbone weights, needs `pip install dreamsim`) "
        "nor a transformers vision model folder with config.json"
    )


class DiffusersImageBackend:
    """s_img through text-to-image + perceptual similarity, as in the paper.

    prompt = ``reference_prompt_list[0] + ", " + cleaned profile string`` (the released code concatenates
    with no separator; the comma keeps the prompt's last word and "art styles" apart). The predicted
    profile's image is compared with the gold profile's image rendered the same way (``target="rendered"``,
    the paper) or with the first reference image of that side (``target="reference_image"``, the released
    code). Every image uses a generator seeded with ``seed``, so equal prompts give equal images and the
    in-memory cache (keyed by prompt) saves the gold renders shared by a GRPO group.

    ``pipeline`` / ``metric`` may be passed as objects (tests, custom servers): a pipeline is any callable
    ``(prompt=list[str], num_inference_steps, guidance_scale, generator, height, width) -> .images``; a
    metric has ``similarity(images_a, images_b) -> list[float]`` in [0, 1].
    """

    def __init__(
        self,
        pipeline_path: str | None = None,
        metric_path: str | None = None,
        device: str = "cpu",
        steps: int = 4,
        size: int = 512,
        guidance: float = 0.0,
        seed: int = 1024,
        target: str = "rendered",
        image_root: str | None = None,
        dtype: str = "auto",
        batch_size: int = 4,
        cache_size: int = 256,
        pipeline: Any = None,
        metric: Any = None,
    ):
        if target not in DIFFUSERS_TARGETS:
            raise ConfigError(f"DiffusersImageBackend target must be one of {list(DIFFUSERS_TARGETS)}, got {target!r}")
        if pipeline is None and not pipeline_path:
            raise ConfigError("DiffusersImageBackend needs pipeline_path (a local diffusers folder) or a pipeline object")
        if metric is None and not metric_path:
            raise ConfigError("DiffusersImageBackend needs metric_path (DreamSim cache or vision model folder) or a metric object")
        self.pipeline_path, self.metric_path = pipeline_path, metric_path
        self.device, self.steps, self.size, self.guidance, self.seed = device, steps, size, guidance, seed
        self.target, self.image_root, self.dtype = target, image_root, dtype
        self.batch_size, self.cache_size = batch_size, cache_size
        self._pipe, self._metric = pipeline, metric
        self._owns = (pipeline is None, metric is None)  # loaded by us: drop when pickled, reload lazily
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        if self._owns[0]:
            state["_pipe"] = None
        if self._owns[1]:
            state["_metric"] = None
        state["_cache"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def profile_prompt(reference_prompt: str | None, profile: Mapping[str, str]) -> str:
        from preferthinker.similarity import clean_profile_text

        text = clean_profile_text(profile)
        return f"{reference_prompt.strip()}, {text}" if reference_prompt and reference_prompt.strip() else text

    def _torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)

    def _pipeline(self):
        if self._pipe is None:
            from diffusers import DiffusionPipeline

            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; 0.35 (released code) knows only torch_dtype
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = DiffusionPipeline.from_pretrained(self.pipeline_path, torch_dtype=self._torch_dtype(), local_files_only=True)
            pipe = pipe.to(self.device)
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        return self._pipe

    def _metric_obj(self):
        if self._metric is None:
            self._metric = load_perceptual_metric(self.metric_path, self.device)
        return self._metric

    def render(self, prompts: Sequence[str]) -> list[Any]:
        """Images for ``prompts`` (cached by prompt, generated in batches of ``batch_size``)."""
        import torch

        with self._lock:
            todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
            fresh: dict[str, Any] = {}
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                gen_device = "cpu" if not str(self.device).startswith("cuda") else self.device
                generators = [torch.Generator(gen_device).manual_seed(self.seed) for _ in chunk]
                result = self._pipeline()(
                    prompt=list(chunk),
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    generator=generators,
                    height=self.size,
                    width=self.size,
                )
                images = list(result.images)
                if len(images) != len(chunk):
                    raise RuntimeError(f"pipeline returned {len(images)} images for {len(chunk)} prompts")
                fresh.update(zip(chunk, images))
            for p, im in fresh.items():
                self._cache[p] = im
                self._cache.move_to_end(p)
            images = {p: fresh.get(p, self._cache.get(p)) for p in prompts}
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return [images[p] for p in prompts]

    def _reference(self, ref: Any):
        from PIL import Image

        if ref is None:
            return None
        if isinstance(ref, Image.Image):
            return ref
        path = Path(ref)
        if not path.is_absolute() and self.image_root:
            path = Path(self.image_root) / path
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError as exc:  # one unreadable reference: no s_img for that sample (text-only), not a dead batch
            log.warning("reference image %s unreadable (%s); text-only score for that sample", path, exc)
            return None

    def similarity(self, queries: Sequence[ImageQuery]) -> list[float | None]:
        out: list[float | None] = [None] * len(queries)
        pred_prompts = [self.profile_prompt(q.reference_prompt, q.pred) for q in queries]
        if self.target == "rendered":
            targets_idx = list(range(len(queries)))
            true_prompts = [self.profile_prompt(q.reference_prompt, q.true) for q in queries]
            images = self.render(pred_prompts + true_prompts)
            pred_imgs, targets = images[: len(queries)], images[len(queries) :]
        else:
            loaded = {i: self._reference(q.reference_image) for i, q in enumerate(queries)}
            targets_idx = [i for i, im in loaded.items() if im is not None]
            pred_imgs = self.render([pred_prompts[i] for i in targets_idx])
            targets = [loaded[i] for i in targets_idx]
        if targets_idx:
            sims = self._metric_obj().similarity(pred_imgs, targets)
            for i, s in zip(targets_idx, sims, strict=True):
                out[i] = float(min(max(s, 0.0), 1.0))
        return out


def build_image_backend(pred: PredictionConfig, embedder_fn: Callable[[], Any] | None = None):
    """The image backend named by ``pred.image_backend`` (None for "none" or w_img == 0)."""
    if pred.image_backend == "none" or pred.w_img <= 0:
        return None
    if pred.image_backend == "synthetic":
        return SyntheticImageBackend(size=pred.synthetic.size, oov=pred.synthetic.oov, embedder_fn=embedder_fn)
    d = pred.diffusers
    return DiffusersImageBackend(
        pipeline_path=d.pipeline_path, metric_path=d.metric_path, device=d.device, steps=d.steps, size=d.size,
        guidance=d.guidance, seed=d.seed, target=d.target, image_root=d.image_root, dtype=d.dtype,
        batch_size=d.batch_size, cache_size=d.cache_size,
    )


# ================================================================================================
# similarity-aware prediction reward


class ProfileScorer:
    """Shared by the two profile rewards: the text embedder and the image backend, loaded on first use
    and dropped when pickled (each process reloads its own)."""

    def __init__(self, prediction: PredictionConfig, image_backend: Any = "from_config"):
        self.pred = prediction
        self._embedder = None
        self.image_backend = build_image_backend(prediction, self.embedder) if image_backend == "from_config" else image_backend

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_embedder"] = None
        return state

    def embedder(self):
        if self._embedder is None:
            from preferthinker.similarity import TextEmbedder, get_default_embedder

            p = self.pred
            if p.text_model is None and p.text_device == "cpu" and p.text_batch_size == 64:
                self._embedder = get_default_embedder()  # one MiniLM per process, shared with evaluation
            else:
                self._embedder = TextEmbedder(p.text_model, device=p.text_device, batch_size=p.text_batch_size)
        return self._embedder


_TERM_FREE_WORDS = {"art", "arts", "style", "styles", "artistic", "color", "colour", "colors", "colours",
                    "medium", "media", "saturation", "detail", "details", "level", "of", "artisticmedium", "artstyles",
                    "artstyle", "none", "n", "a", "na", "null", "unknown", "term"}


def _has_terms(block: str) -> bool:
    """False when a profile block holds no term at all: only element names, quotes and punctuation
    (``"Art Styles": "", ...``), or placeholders such as "N/A" / "none"."""
    words = re.findall(r"[a-z0-9]+", block.lower())
    return any(w not in _TERM_FREE_WORDS for w in words)


class ProfileReward(_Reward):
    """Similarity-aware prediction reward for one side (``pref`` or ``nonpref``), in [0, 1]::

        r = (w_text * s_text + w_img * s_img) / (w_text + w_img)

    * ``s_text``: cosine similarity (clamped to [0, 1]) of all-MiniLM-L6-v2 embeddings of the cleaned
      predicted and gold profile strings (the released code's computation), batched and cached;
    * ``s_img``: the image backend's similarity of images rendered from the two profiles; where it is
      unavailable (backend "none", no content seed / reference, a backend error) r = s_text and the
      fallback rate is logged.

    None for rows without a gold profile of this side (real-user data); 0.0 when the block is missing,
    repeated, empty, identical to the other side's block, or the output is oversize.

    Example (``image_backend: none``; needs the bundled MiniLM model)::

        >>> r = ProfileReward("pref", PredictionConfig(image_backend="none"))
        >>> r(["<visual preference profile></visual preference profile>"], prefer_attributes=[None])
        [None]
    """

    def __init__(self, side: str, prediction: PredictionConfig | None = None, max_chars: int = DEFAULT_MAX_CHARS,
                 scorer: ProfileScorer | None = None):
        if side not in _SIDES:
            raise ConfigError(f"ProfileReward side must be one of {list(_SIDES)}, got {side!r}")
        self.name = f"{side}_profile"
        super().__init__(max_chars)
        self.side = side
        self.scorer = scorer if scorer is not None else ProfileScorer(validate_prediction(prediction))

    def __repr__(self) -> str:
        p = self.scorer.pred
        return f"ProfileReward({self.side!r}, w_text={p.w_text}, w_img={p.w_img}, image_backend={p.image_backend!r})"

    def _content_seed(self, kwargs, n: int) -> list[int | None]:
        """content_seed column; else a stable hash of reference_prompt_list[0] or the first preferred image."""
        seeds = _column(kwargs, ("content_seed",), n) or [None] * n
        prompts = _column(kwargs, ("reference_prompt_list",), n) or [None] * n
        refs = _column(kwargs, _SIDES["pref"]["refs"], n) or [None] * n
        out = []
        for s, p, r in zip(seeds, prompts, refs):
            p, r = _first(p), _first(r)
            if s is not None:
                out.append(int(s))
            elif isinstance(p, str) and p:
                out.append(_stable_seed(p))
            elif isinstance(r, (str, os.PathLike)):
                out.append(_stable_seed(str(r)))
            else:
                out.append(None)
        return out

    def __call__(self, completions, log_metric=None, log_extra=None, **kwargs) -> list[float | None]:
        side = _SIDES[self.side]
        texts = self._texts(completions)
        n = len(texts)
        gold_col = _column(kwargs, (side["gold"],), n)
        golds = [None] * n if gold_col is None else [_gold_profile(g, side["gold"], i) for i, g in enumerate(gold_col)]
        pred_cfg = self.scorer.pred

        out: list[float | None] = [None] * n
        s_text: list[float | None] = [None] * n
        s_img: list[float | None] = [None] * n
        status: list[str | None] = [None] * n  # per-sample reason, for the rates below
        jobs: list[tuple[int, Any, dict, bool]] = []  # (row, dict or raw text, gold, parsed?)
        for i, (text, gold) in enumerate(zip(texts, golds)):
            if gold is None:
                continue  # no gold profile for this side: the reward does not apply
            if len(text) > self.max_chars:
                out[i], status[i] = 0.0, "oversize"
                continue
            a = _parse(text)
            own_raw = a.preference_text if self.side == "pref" else a.non_preference_text
            own = a.preference if self.side == "pref" else a.non_preference
            if own_raw is None or not _blocks_exact(a, side["tag"]):
                out[i], status[i] = 0.0, "missing"
                continue
            if not _has_terms(own_raw):
                out[i], status[i] = 0.0, "empty"
                continue
            other_raw = a.non_preference_text if self.side == "pref" else a.preference_text
            other_parsed = a.non_preference if self.side == "pref" else a.preference
            if other_raw is not None and _profile_key(own, own_raw) == _profile_key(other_parsed, other_raw):
                out[i], status[i] = 0.0, "copied"
                continue
            if own is not None:
                jobs.append((i, own, gold, True))
                status[i] = "parsed"
            else:
                jobs.append((i, own_raw[:MAX_PROFILE_CHARS], gold, False))
                status[i] = "unparsed"

        if jobs and pred_cfg.w_text > 0:
            from preferthinker.similarity import profile_text_similarity

            sims = profile_text_similarity(self.scorer.embedder(), [j[1] for j in jobs], [j[2] for j in jobs])
            for (i, *_), s in zip(jobs, sims, strict=True):
                s_text[i] = None if s is None else float(min(max(s, 0.0), 1.0))

        backend = self.scorer.image_backend
        img_jobs = [j for j in jobs if j[3]] if backend is not None else []
        img_error = 0.0
        if img_jobs:
            seeds = self._content_seed(kwargs, n)
            prompts = _column(kwargs, ("reference_prompt_list",), n) or [None] * n
            refs = _column(kwargs, side["refs"], n) or [None] * n
            queries = [
                ImageQuery(pred=j[1], true=j[2], side=self.side, content_seed=seeds[j[0]],
                           reference_prompt=_first(prompts[j[0]]), reference_image=_first(refs[j[0]]))
                for j in img_jobs
            ]
            try:
                sims = backend.similarity(queries)
            except Exception as exc:  # a T2I/metric failure must not kill the step: text-only, logged
                log.warning("%s: image backend failed (%s: %s); using text-only scores for this batch",
                            self.name, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                sims, img_error = [None] * len(queries), 1.0
            for (i, *_), s in zip(img_jobs, sims, strict=True):
                s_img[i] = s

        w_t, w_i = pred_cfg.w_text, (pred_cfg.w_img if backend is not None else 0.0)
        fallback: list[float] = []
        for i, obj, gold, parsed in jobs:
            st = s_text[i] if s_text[i] is not None else 0.0
            if parsed:
                si = s_img[i]
                if w_i > 0:
                    fallback.append(float(si is None))
                if si is None or w_i <= 0:
                    score = st if w_t > 0 else 0.0  # text-only fallback (w_text == 0 and no image: nothing to score)
                else:
                    score = (w_t * st + w_i * si) / (w_t + w_i)
            else:
                # unreadable block: no image can be rendered; text only, scaled down and weighted as if s_img = 0
                score = pred_cfg.unparsed_factor * (w_t * st) / (w_t + w_i) if w_t > 0 else 0.0
            out[i] = float(min(max(score, 0.0), 1.0))

        sink = _MetricSink(self.name, log_metric)
        sink.mean("similarity", out)
        sink.mean("s_text", s_text)
        sink.mean("s_img", s_img)
        applicable = [s for s in status if s is not None]
        if applicable:
            for key in ("parsed", "unparsed", "empty", "copied", "missing", "oversize"):
                sink.mean(f"{key}_rate", [float(s == key) for s in applicable])
        sink.mean("img_fallback_rate", fallback)
        if img_jobs:
            sink.mean("img_error", [img_error])
            oov = getattr(backend, "last_oov_rate", None)
            sink.mean("oov_rate", [oov])
        if callable(log_extra):
            log_extra(f"{self.name}_s_text", s_text)
            log_extra(f"{self.name}_s_img", s_img)
        return out


def _profile_key(parsed: dict | None, raw: str | None) -> str:
    """What "the same profile" means: equal cleaned strings (case, quotes, spacing ignored)."""
    from preferthinker.similarity import clean_profile_text

    if parsed is not None:
        return clean_profile_text(parsed)
    return clean_profile_text(raw or "")


def validate_prediction(prediction: PredictionConfig | Mapping | None) -> PredictionConfig:
    return validate_reward_config({"names": ["pref_profile"], "weights": [1.0], "prediction": prediction}).prediction


# ================================================================================================
# registry


def accuracy_reward(cfg: RewardConfig | None = None, **_) -> AccuracyReward:
    return AccuracyReward(max_chars=cfg.max_chars if cfg else DEFAULT_MAX_CHARS)


def format_reward(cfg: RewardConfig | None = None, **_) -> FormatReward:
    return FormatReward(max_chars=cfg.max_chars if cfg else DEFAULT_MAX_CHARS)


def consistency_reward(cfg: RewardConfig | None = None, **_) -> ConsistencyReward:
    return ConsistencyReward(max_chars=cfg.max_chars if cfg else DEFAULT_MAX_CHARS)


def pref_profile_reward(cfg: RewardConfig | None = None, scorer: ProfileScorer | None = None) -> ProfileReward:
    cfg = cfg or validate_reward_config({"names": ["pref_profile"], "weights": [1.0]})
    return ProfileReward("pref", cfg.prediction, cfg.max_chars, scorer=scorer)


def nonpref_profile_reward(cfg: RewardConfig | None = None, scorer: ProfileScorer | None = None) -> ProfileReward:
    cfg = cfg or validate_reward_config({"names": ["nonpref_profile"], "weights": [1.0]})
    return ProfileReward("nonpref", cfg.prediction, cfg.max_chars, scorer=scorer)


# name -> factory(cfg: RewardConfig, scorer: ProfileScorer | None) -> reward callable with __name__ == name
REWARDS: dict[str, Callable[..., _Reward]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "pref_profile": pref_profile_reward,
    "nonpref_profile": nonpref_profile_reward,
    "consistency": consistency_reward,
}


def _register_plugin(name: str) -> None:
    """``reward.names`` may name a user reward as ``package.module:factory`` (importable from the launch
    directory or PYTHONPATH): ``factory(cfg, scorer=None)`` returns a TRL reward callable whose ``__name__`` is
    ``factory``'s name (the metric key). It is added to ``REWARDS`` under the full name."""
    import importlib

    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward.names: cannot load the reward {name!r} ({type(e).__name__}: {e}); "
                          "use 'package.module:factory' with the module importable from the launch directory") from None
    if not callable(factory):
        raise ConfigError(f"reward.names: {name!r} is not callable")
    REWARDS[name] = factory


def build_rewards(cfg: Any) -> tuple[list[_Reward], list[float]]:
    """Validate ``cfg`` and return ``(reward_funcs, reward_weights)`` for ``GRPOTrainer`` / ``GRPOConfig``.

    The two profile rewards share one ``ProfileScorer`` (one embedder, one image backend). Heavy models
    load on first call, not here.
    """
    rc = validate_reward_config(cfg)
    scorer = ProfileScorer(rc.prediction) if {"pref_profile", "nonpref_profile"} & set(rc.names) else None
    funcs = [REWARDS[name](rc, scorer=scorer) for name in rc.names]
    for name, fn in zip(rc.names, funcs):
        if fn.__name__ != name.rpartition(":")[2]:  # the registry key (plugin: its factory's name) is the metric key
            raise RuntimeError(f"reward factory {name!r} returned a callable named {fn.__name__!r}")
    log.info("rewards: %s", ", ".join(f"{n} x{w:g}" for n, w in zip(rc.names, rc.weights)))
    return funcs, list(rc.weights)


_REPORT_DEFAULT = {
    "names": ["accuracy", "format", "pref_profile", "nonpref_profile", "consistency"],
    "weights": [1.0, 0.3, 0.35, 0.35, 0.0],
    "prediction": {"image_backend": "none"},
}


def reward_report(completions: Sequence[Any], *, rewards: Any = None, **columns) -> dict[str, float | None]:
    """Means of every reward and sub-score over ``completions`` (evaluation, debugging).

    ``rewards``: a reward config (mapping) or a list of reward callables; default: all five rewards,
    text-only prediction. ``columns``: the dataset columns (``solution``, ``prefer_attributes``, ...).
    Returns ``{"<name>": mean over applicable rows (None if none), "<name>/<sub>": ..., "n": rows}``.

    Example::

        >>> reward_report(["<answer>Image A</answer>"], rewards={"names": ["accuracy"], "weights": [1]},
        ...               solution=["Image A"])["accuracy"]
        1.0
    """
    if rewards is None or isinstance(rewards, Mapping) or type(rewards).__module__.startswith("omegaconf"):
        funcs, _ = build_rewards(rewards if rewards is not None else _REPORT_DEFAULT)
    else:
        funcs = list(rewards)
    metrics: dict[str, list[float]] = {}

    def log_metric(name: str, value: float) -> None:
        metrics.setdefault(name.removeprefix("rewards/"), []).append(value)

    report: dict[str, float | None] = {"n": len(completions)}
    for fn in funcs:
        values = fn(completions, log_metric=log_metric, **columns)
        vals = [v for v in values if v is not None]
        report[fn.__name__] = float(np.mean(vals)) if vals else None
    for name, vals in metrics.items():
        report[name] = float(np.mean(vals))
    return report
