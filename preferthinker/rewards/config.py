"""Reward configuration: dataclasses that hold the ONE set of defaults, and their validation.

``configs/reward/*.yaml`` state only what a preset chooses (names, weights, the image backend, the
settings the preset exists for); every other value comes from the dataclasses below. Backends are built
from these dataclasses too, so a default is written once. ``runtime.register_resolvers`` stores
``RewardConfig`` as the Hydra config ``reward/schema`` that every preset starts from, so any knob is
overridden as usual: ``reward.prediction.synthetic.size=32``.

Every check raises ``ConfigError`` naming the key, the value and the fix, at start-up, before any model loads.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from preferthinker.runtime import ConfigError

DEFAULT_MAX_CHARS = 16_000  # ~4x a full CoT (the official examples: 3.4k, 4.3k chars); 2048 Qwen tokens ~ 8-10k chars
IMAGE_BACKENDS = ("none", "synthetic", "diffusers")
DIFFUSERS_TARGETS = ("rendered", "reference_image")
DTYPES = ("auto", "float32", "bfloat16", "float16")
PROFILE_REWARDS = ("pref_profile", "nonpref_profile")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class SyntheticBackendConfig:
    """``reward.prediction.synthetic``: the offline renderer of the synthetic data."""

    size: int = 64  # side of the rendered images in pixels; 64 keeps a batch of renders well under a second


@dataclass
class DiffusersBackendConfig:
    """``reward.prediction.diffusers``: text-to-image + perceptual metric. The defaults are the released
    reward server's (FLUX.1-schnell: 4 steps, guidance 0, 512 px, every image from seed 1024)."""

    pipeline_path: str | None = None  # local diffusers pipeline folder (e.g. FLUX.1-schnell); required
    metric_path: str | None = None  # DreamSim cache folder, or a local transformers vision model folder; required
    device: str = "auto"  # auto: cuda when available, else cpu (one default for every entry point)
    steps: int = 4
    size: int = 512
    guidance: float = 0.0
    seed: int = 1024
    target: str = "rendered"  # "rendered": gold profile rendered too (paper text); "reference_image": released code
    separator: str = ", "  # between reference prompt and profile string; the released code uses "" (paper_real.yaml)
    image_root: str | None = None  # folder of relative reference-image paths; None: the dataset's image_root column
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 elsewhere
    batch_size: int = 4  # prompts per pipeline call
    cache_size: int = 256  # rendered images kept in memory, keyed by prompt


@dataclass
class PredictionConfig:
    """``reward.prediction``: the similarity-aware prediction reward."""

    w_text: float = 0.5  # weight of s_text; not given by the paper
    w_img: float = 0.5  # weight of s_img; not given by the paper
    text_model: str | None = None  # local SentenceTransformer folder; None: the bundled all-MiniLM-L6-v2
    text_device: str = "cpu"  # the released code runs SBERT on CPU too (ZeRO-3 partitions GPU parameters)
    text_batch_size: int = 64
    image_backend: str = "synthetic"  # none | synthetic | diffusers
    unparsed_factor: float = 0.5  # multiplier for a present but unreadable profile block
    synthetic: SyntheticBackendConfig = field(default_factory=SyntheticBackendConfig)
    diffusers: DiffusersBackendConfig = field(default_factory=DiffusersBackendConfig)


@dataclass
class RewardConfig:
    """A whole ``reward`` group: which rewards, their TRL weights, and the prediction settings."""

    names: list[str]
    weights: list[float]
    max_chars: int = DEFAULT_MAX_CHARS
    prediction: PredictionConfig = field(default_factory=PredictionConfig)


# ------------------------------------------------------------------------------------------------
# small checks


def to_plain(cfg: Any) -> Any:
    """OmegaConf DictConfig/ListConfig -> plain containers (without importing omegaconf eagerly)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _int_in(value: Any, key: str, lo: int, hi: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be an integer in {lo}..{hi}{unit}, got {value!r}")
    return value


def check_max_chars(value: Any, key: str = "reward.max_chars") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer (characters), got {value!r}")
    return value


def check_device(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _DEVICE_RE.match(value):
        raise ConfigError(f"{key} must be auto, cpu, mps, cuda or cuda:N, got {value!r}")
    return value


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other name unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fill(cls: type, data: Any, where: str, removed: Mapping[str, str] | None = None):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys with the list of known ones."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return replace(data)  # a copy: validation normalises fields in place
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    for key, why in (removed or {}).items():
        if key in data:
            raise ConfigError(f"{where}.{key} was removed: {why}; delete the key")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**dict(data))


# ------------------------------------------------------------------------------------------------
# sections


def check_synthetic(s: SyntheticBackendConfig, where: str = "reward.prediction.synthetic") -> SyntheticBackendConfig:
    _int_in(s.size, f"{where}.size", 28, 512, " pixels")
    return s


def check_diffusers(d: DiffusersBackendConfig, where: str = "reward.prediction.diffusers", *, need_paths: bool = False) -> DiffusersBackendConfig:
    """Check one diffusers section; with ``need_paths`` (the backend will run) the model folders must exist
    and diffusers must be installed, so a typo fails at start-up instead of at the first GRPO step."""
    if d.target not in DIFFUSERS_TARGETS:
        raise ConfigError(f"{where}.target must be one of {list(DIFFUSERS_TARGETS)}, got {d.target!r}")
    if d.dtype not in DTYPES:
        raise ConfigError(f"{where}.dtype must be auto|float32|bfloat16|float16, got {d.dtype!r}")
    check_device(d.device, f"{where}.device")
    _int_in(d.steps, f"{where}.steps", 1, 1000)
    _int_in(d.size, f"{where}.size", 8, 4096, " pixels")
    if d.size % 8:
        raise ConfigError(f"{where}.size must be a multiple of 8 (the VAE downsamples by 8), got {d.size}")
    _int_in(d.batch_size, f"{where}.batch_size", 1, 1024)
    _int_in(d.cache_size, f"{where}.cache_size", 0, 1_000_000)
    _int_in(d.seed, f"{where}.seed", 0, 2**63 - 1)
    d.guidance = _number(d.guidance, f"{where}.guidance")
    if d.guidance < 0:
        raise ConfigError(f"{where}.guidance must be >= 0, got {d.guidance}")
    if not isinstance(d.separator, str):
        raise ConfigError(f"{where}.separator must be a string (the released code uses ''), got {d.separator!r}")
    for key in ("pipeline_path", "metric_path", "image_root"):
        value = getattr(d, key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}.{key} must be a folder path or null, got {value!r}")
    if not need_paths:
        return d
    for key in ("pipeline_path", "metric_path"):
        value = getattr(d, key)
        if not value:
            raise ConfigError(f"{where}.{key} is required with image_backend 'diffusers' "
                              "(a local folder; no hub access), or set image_backend: none")
        if not Path(value).is_dir():
            raise ConfigError(f"{where}.{key}={value}: no such folder (local model folders only; no hub access)")
    if not (Path(d.pipeline_path) / "model_index.json").is_file():
        raise ConfigError(f"{where}.pipeline_path={d.pipeline_path}: not a diffusers pipeline folder (no model_index.json)")
    if d.image_root is not None and not Path(d.image_root).is_dir():
        raise ConfigError(f"{where}.image_root={d.image_root}: no such folder")
    if importlib.util.find_spec("diffusers") is None:
        raise ConfigError("image_backend 'diffusers' needs the diffusers package: pip install -e '.[t2i]'")
    return d


def check_prediction(raw: PredictionConfig | Mapping | None, *, uses_profiles: bool = True) -> PredictionConfig:
    """A checked copy of ``reward.prediction`` (a mapping, a PredictionConfig or None for the defaults)."""
    if isinstance(raw, PredictionConfig):
        pred = replace(raw, synthetic=replace(raw.synthetic), diffusers=replace(raw.diffusers))
    else:
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"reward.prediction must be a mapping, got {type(raw).__name__}")
        raw = dict(raw or {})
        syn = _fill(SyntheticBackendConfig, raw.pop("synthetic", None), "reward.prediction.synthetic",
                    removed={"oov": "the synthetic renderer refuses terms outside its vocabulary (a predicted one "
                                    "scores s_img 0.0, a gold one is an error), it no longer maps them"})
        dif = _fill(DiffusersBackendConfig, raw.pop("diffusers", None), "reward.prediction.diffusers")
        pred = _fill(PredictionConfig, raw, "reward.prediction")
        pred.synthetic, pred.diffusers = syn, dif
    pred.w_text = _number(pred.w_text, "reward.prediction.w_text")
    pred.w_img = _number(pred.w_img, "reward.prediction.w_img")
    pred.unparsed_factor = _number(pred.unparsed_factor, "reward.prediction.unparsed_factor")
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
    if pred.text_model is not None and (not isinstance(pred.text_model, str) or not pred.text_model.strip()):
        raise ConfigError(f"reward.prediction.text_model must be a local folder path or null, got {pred.text_model!r}")
    check_device(pred.text_device, "reward.prediction.text_device")
    _int_in(pred.text_batch_size, "reward.prediction.text_batch_size", 1, 100_000)
    check_synthetic(pred.synthetic)
    runs_t2i = uses_profiles and pred.image_backend == "diffusers" and pred.w_img > 0
    check_diffusers(pred.diffusers, need_paths=runs_t2i)
    return pred


def parse_reward_config(cfg: Any) -> RewardConfig:
    """Check a reward config's shape, weights and prediction settings (reward names are the registry's job).

    Shape (``configs/reward/*.yaml``)::

        names: [accuracy, format, pref_profile, nonpref_profile]
        weights: [1.0, 0.3, 0.35, 0.35]      # TRL reward_weights, one per name, >= 0
        max_chars: 16000                      # longer completions score 0 everywhere
        prediction: {w_text: 0.5, w_img: 0.5, image_backend: synthetic, ...}
    """
    if isinstance(cfg, RewardConfig):
        cfg = {"names": cfg.names, "weights": cfg.weights, "max_chars": cfg.max_chars, "prediction": cfg.prediction}
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"reward config must be a mapping with 'names' and 'weights', got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - {"names", "weights", "max_chars", "prediction"})
    if unknown:
        raise ConfigError(f"reward: unknown key(s) {unknown}; known keys: ['max_chars', 'names', 'prediction', 'weights']")
    names, weights = cfg.get("names"), cfg.get("weights")
    if not isinstance(names, Sequence) or isinstance(names, str) or not names:
        raise ConfigError(f"reward.names must be a non-empty list of reward names, got {names!r}")
    names = [str(n) for n in names]
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
    max_chars = check_max_chars(cfg.get("max_chars", DEFAULT_MAX_CHARS))
    pred = check_prediction(cfg.get("prediction"), uses_profiles=any(n in PROFILE_REWARDS for n in names))
    return RewardConfig(names=names, weights=weights, max_chars=max_chars, prediction=pred)
