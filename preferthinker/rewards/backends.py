"""Image backends of the prediction reward: ``similarity(queries) -> list[float | None]`` in [0, 1].

* ``SyntheticImageBackend``: the project's synthetic renderer draws predicted and gold profile on the same
  content; offline, for the synthetic data only. It refuses a term outside its vocabulary.
* ``DiffusersImageBackend``: a text-to-image pipeline renders ``reference prompt + profile string`` and a
  perceptual metric (DreamSim or the embedding fallback) compares it with the gold render or with the
  record's first reference image of that side (``reward=paper_real``, the released computation).

Convention shared with the rewards: ``None`` = no s_img for that sample (the reward falls back to text
and counts it), ``0.0`` = the prediction is wrong, an exception = a setup problem (``ConfigError``: it
stops the run with its reason) or a transient failure of the batch (the reward falls back and counts it).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from preferthinker.profile import ELEMENTS, split_terms
from preferthinker.rewards.config import (
    DiffusersBackendConfig,
    PredictionConfig,
    SyntheticBackendConfig,
    check_diffusers,
    check_synthetic,
    resolve_device,
)
from preferthinker.rewards.perceptual import load_perceptual_metric, synthetic_image_similarity
from preferthinker.runtime import ConfigError

log = logging.getLogger("preferthinker.rewards")


class OutOfVocabularyError(ValueError):
    """A profile term the synthetic renderer cannot draw; ``terms`` lists ``(element, term)`` pairs."""

    def __init__(self, terms: Sequence[tuple[str, str]], whose: str):
        self.terms = list(terms)
        listed = ", ".join(f"{t!r} ({e})" for e, t in self.terms)
        super().__init__(f"{whose} profile term(s) {listed} not in the synthetic vocabulary "
                         "(data/synthetic/vocabulary.yaml); the synthetic renderer draws only its own terms")


class ImageBackendLoadError(ConfigError):
    """A model of the image backend cannot be loaded: a setup problem, never a silent text-only run."""


@dataclass
class ImageQuery:
    """One predicted profile to compare with its gold profile in image space."""

    pred: dict[str, str]
    true: dict[str, str]
    side: str  # "pref" | "nonpref"
    content_seed: int | None = None  # synthetic backend: the content both images share
    reference_prompt: str | None = None  # diffusers backend: T2I prompt of the first reference image
    reference_image: Any = None  # diffusers target "reference_image": a path relative to the image root, or a PIL image
    image_root: str | None = None  # the dataset's image root (column ``image_root``), for a relative path
    where: str = ""  # "row 3" - named in warnings


def _first_term(value: str) -> str:
    """The first term of a (possibly multi-term, "Cubism, Pop Art") value: the one that gets drawn."""
    terms = split_terms(str(value).replace('"', ""))
    return terms[0].rstrip(".").strip() if terms else ""


def _spelling(term: str) -> str:
    # case, inner whitespace and a trailing "." are spelling, not a different term
    return " ".join(term.split()).lower()


class SyntheticImageBackend:
    """s_img with the project's synthetic renderer, fully offline.

    Both profiles are rendered on the same content (``ImageQuery.content_seed``) at ``size`` pixels and
    compared with :func:`synthetic_image_similarity`. Terms must be vocabulary terms (case and spacing
    aside; a multi-term value is drawn with its first term):

    * a predicted term outside the vocabulary makes s_img 0.0: in the synthetic world the model wrote a
      wrong term (the rate is ``last_oov_rate``, the messages ``last_refusals``);
    * a gold term outside it makes s_img None (no image term; the reward falls back to text): the data is
      not synthetic, so the renderer cannot stand for its images. The rate is ``last_gold_oov_rate``, the
      first message ``last_gold_refusal``; the reward warns once with the fix (``reward=paper_real``).
    """

    def __init__(self, size: int = SyntheticBackendConfig.size):
        self.size = check_synthetic(SyntheticBackendConfig(size=size), where="SyntheticImageBackend").size
        self.last_oov_rate: float | None = None
        self.last_gold_oov_rate: float | None = None
        self.last_refusals: list[str] = []
        self.last_gold_refusal: str | None = None
        self.warned_gold = False  # the reward warns once per process about non-synthetic gold profiles
        self._renderer = None
        self._vocab_lower: dict[str, dict[str, str]] = {}
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_renderer"], state["_vocab_lower"], state["_cache"] = None, {}, OrderedDict()
        return state

    def _load(self) -> None:
        if self._renderer is not None:
            return
        from preferthinker.data.synthetic import render as render_mod
        from preferthinker.data.synthetic.vocabulary import load_vocabulary

        vocab = load_vocabulary()
        self._vocab_lower = {e: {_spelling(t): t for t in vocab.names(e)} for e in ELEMENTS}
        self._renderer = render_mod

    def out_of_vocabulary(self, profile: Mapping[str, str]) -> list[tuple[str, str]]:
        """``(element, term)`` for each drawn term of ``profile`` the renderer does not know."""
        self._load()
        return [(e, _first_term(profile[e])) for e in ELEMENTS if _spelling(_first_term(profile[e])) not in self._vocab_lower[e]]

    def vocabulary_profile(self, profile: Mapping[str, str], whose: str = "predicted") -> dict[str, str]:
        """``profile`` in the renderer's spelling; ``OutOfVocabularyError`` naming every unknown term and element."""
        bad = self.out_of_vocabulary(profile)
        if bad:
            raise OutOfVocabularyError(bad, whose)
        return {e: self._vocab_lower[e][_spelling(_first_term(profile[e]))] for e in ELEMENTS}

    def similarity(self, queries: Sequence[ImageQuery]) -> list[float | None]:
        self._load()
        out: list[float | None] = []
        oov_terms, n_terms, gold_oov, n_seeded = 0, 0, 0, 0
        self.last_refusals, self.last_gold_refusal = [], None
        for q in queries:
            if q.content_seed is None:
                out.append(None)  # no shared content to render on: text-only for this sample
                continue
            n_seeded += 1
            try:
                truth = self.vocabulary_profile(q.true, f"gold {q.side}")
            except OutOfVocabularyError as exc:
                gold_oov += 1
                if self.last_gold_refusal is None:
                    self.last_gold_refusal = f"{q.where}: {exc}" if q.where else str(exc)
                out.append(None)  # not synthetic data: no image term rather than a made-up one
                continue
            n_terms += len(ELEMENTS)
            try:
                mapped = self.vocabulary_profile(q.pred, f"predicted {q.side}")
            except OutOfVocabularyError as exc:
                oov_terms += len(exc.terms)
                self.last_refusals.append(f"{q.where}: {exc}" if q.where else str(exc))
                out.append(0.0)  # an undrawable term is a wrong term in the synthetic world
                continue
            out.append(synthetic_image_similarity(self._render(mapped, q.content_seed), self._render(truth, q.content_seed)))
        self.last_oov_rate = oov_terms / n_terms if n_terms else None
        self.last_gold_oov_rate = gold_oov / n_seeded if n_seeded else None
        return out

    def _render(self, profile: dict[str, str], seed: int) -> np.ndarray:
        # The gold image is the same for all G completions of a prompt: keep recent renders.
        key = (int(seed), tuple(profile[e] for e in ELEMENTS))
        img = self._cache.get(key)
        if img is None:
            img = np.asarray(self._renderer.render_array(int(seed), profile, self.size), dtype=np.uint8)
            self._cache[key] = img
            while len(self._cache) > 512:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return img


class DiffusersImageBackend:
    """s_img through text-to-image + perceptual similarity.

    prompt = ``reference_prompt + separator + cleaned profile string`` (``"art styles: cubism, color: ..."``).
    The released code concatenates with no separator (``paper_real.yaml``: ``separator: ""``); the default
    ``", "`` keeps the prompt's last word and "art styles" apart. The predicted profile's image is compared
    with the gold profile's image rendered the same way (``target: rendered``, the paper's text) or with the
    record's first reference image of that side (``target: reference_image``, the released code). Every
    image starts from a generator seeded with ``seed``, so equal prompts give equal images and the in-memory
    cache (keyed by prompt) saves the gold renders a GRPO group shares.

    Settings come from ``DiffusersBackendConfig`` (the one set of defaults); keyword arguments override
    single fields. ``pipeline`` / ``metric`` may be passed as objects (tests, custom servers): a pipeline is
    any callable ``(prompt=list[str], num_inference_steps, guidance_scale, generator, height, width) -> .images``;
    a metric has ``similarity(images_a, images_b) -> list[float]`` in [0, 1].
    """

    def __init__(self, config: DiffusersBackendConfig | None = None, *, pipeline: Any = None, metric: Any = None, **settings: Any):
        known = {f.name for f in fields(DiffusersBackendConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"DiffusersImageBackend: unknown setting(s) {unknown}; known: {sorted(known)}")
        cfg = replace(config or DiffusersBackendConfig(), **settings)
        self.cfg = check_diffusers(cfg, where="DiffusersImageBackend")
        if pipeline is None and not cfg.pipeline_path:
            raise ConfigError("DiffusersImageBackend needs pipeline_path (a local diffusers folder) or a pipeline object")
        if metric is None and not cfg.metric_path:
            raise ConfigError("DiffusersImageBackend needs metric_path (DreamSim cache or vision model folder) or a metric object")
        self._pipe, self._metric = pipeline, metric
        self._owns = (pipeline is None, metric is None)  # loaded by us: drop when pickled, reload lazily
        self._device: str | None = None
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.last_reference_missing: int = 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._owns[0]:
            state["_pipe"] = None
        if self._owns[1]:
            state["_metric"] = None
        state["_cache"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self.cfg.device)
        return self._device

    @staticmethod
    def profile_prompt(reference_prompt: str | None, profile: Mapping[str, str], separator: str = ", ") -> str:
        """The T2I prompt of one profile: ``reference_prompt + separator + clean_profile_text(profile)``;
        the profile string alone without a reference prompt. With the released empty separator the
        reference prompt is used exactly as stored (no strip): the released code does ``a + b``."""
        from preferthinker.similarity import clean_profile_text

        text = clean_profile_text(profile)
        if not reference_prompt or not reference_prompt.strip():
            return text
        head = reference_prompt.strip() if separator else reference_prompt
        return f"{head}{separator}{text}"

    def _torch_dtype(self):
        import torch

        if self.cfg.dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return getattr(torch, self.cfg.dtype)

    def _pipeline(self) -> Any:
        if self._pipe is None:
            path = self.cfg.pipeline_path
            try:
                from diffusers import DiffusionPipeline

                with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; 0.35 (released code) knows only torch_dtype
                    warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                    pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=self._torch_dtype(), local_files_only=True)
                pipe = pipe.to(self.device)
            except Exception as exc:  # any load failure is a setup problem: stop with the reason
                raise ImageBackendLoadError(f"reward.prediction.diffusers.pipeline_path={path}: cannot load the text-to-image "
                                           f"pipeline ({type(exc).__name__}: {exc})") from exc
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe
        return self._pipe

    def _metric_obj(self) -> Any:
        if self._metric is None:
            try:
                self._metric = load_perceptual_metric(self.cfg.metric_path, self.device)
            except Exception as exc:
                raise ImageBackendLoadError(f"reward.prediction.diffusers.metric_path={self.cfg.metric_path}: cannot load the "
                                           f"perceptual metric ({type(exc).__name__}: {exc})") from exc
        return self._metric

    def render(self, prompts: Sequence[str]) -> list[Any]:
        """Images for ``prompts`` (cached by prompt, generated in batches of ``batch_size``)."""
        import torch

        cfg = self.cfg
        with self._lock:
            todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
            fresh: dict[str, Any] = {}
            pipe = self._pipeline() if todo else None
            for start in range(0, len(todo), cfg.batch_size):
                chunk = todo[start : start + cfg.batch_size]
                gen_device = self.device if self.device.startswith("cuda") else "cpu"
                generators = [torch.Generator(gen_device).manual_seed(cfg.seed) for _ in chunk]
                result = pipe(prompt=list(chunk), num_inference_steps=cfg.steps, guidance_scale=cfg.guidance,
                              generator=generators, height=cfg.size, width=cfg.size)
                images = list(result.images)
                if len(images) != len(chunk):
                    raise RuntimeError(f"pipeline returned {len(images)} images for {len(chunk)} prompts")
                fresh.update(zip(chunk, images))
            for p, im in fresh.items():
                self._cache[p] = im
                self._cache.move_to_end(p)
            images = {p: fresh.get(p, self._cache.get(p)) for p in prompts}
            while len(self._cache) > cfg.cache_size:
                self._cache.popitem(last=False)
            return [images[p] for p in prompts]

    def reference(self, q: ImageQuery) -> Any:
        """The record's first reference image of the query's side as an RGB PIL image, or None (warned).

        A path goes through the project's loaders: ``schema.resolve_image`` (relative to the configured
        ``image_root``, else the row's ``image_root`` column; refuses paths that leave the root) and
        ``prompting.load_image`` (missing, corrupt or oversized files become ``ImageLoadError``)."""
        from PIL import Image

        from preferthinker.data.schema import SchemaError, resolve_image
        from preferthinker.prompting import DEFAULT_MIN_PIXELS, ImageLoadError, load_image

        ref = q.reference_image
        field = f"{q.where + ' ' if q.where else ''}{'prefered_images' if q.side == 'pref' else 'non_prefered_images'}[0]"
        if ref is None:
            log.warning("%s: no reference image; text-only score for that sample", field)
            return None
        if isinstance(ref, Image.Image):
            return ref.convert("RGB")
        root = self.cfg.image_root or q.image_root
        if not root:
            log.warning("%s: %r is relative but there is no image root (set reward.prediction.diffusers.image_root or "
                        "give the dataset an image_root column); text-only score for that sample", field, ref)
            return None
        try:
            path = resolve_image(root, str(ref), fld=field)
            # the metric resizes to its own input size; the T2I side bounds the pixels it is worth decoding
            return load_image(path, DEFAULT_MIN_PIXELS, max(self.cfg.size ** 2, DEFAULT_MIN_PIXELS), what=field)
        except (SchemaError, ImageLoadError) as exc:  # one bad reference: no s_img for that sample, not a dead batch
            log.warning("%s; text-only score for that sample", exc)
            return None

    def similarity(self, queries: Sequence[ImageQuery]) -> list[float | None]:
        out: list[float | None] = [None] * len(queries)
        sep = self.cfg.separator
        pred_prompts = [self.profile_prompt(q.reference_prompt, q.pred, sep) for q in queries]
        self.last_reference_missing = 0
        if self.cfg.target == "rendered":
            targets_idx = list(range(len(queries)))
            true_prompts = [self.profile_prompt(q.reference_prompt, q.true, sep) for q in queries]
            images = self.render(pred_prompts + true_prompts)
            pred_imgs, targets = images[: len(queries)], images[len(queries) :]
        else:
            loaded = {i: self.reference(q) for i, q in enumerate(queries)}
            targets_idx = [i for i, im in loaded.items() if im is not None]
            self.last_reference_missing = len(queries) - len(targets_idx)
            pred_imgs = self.render([pred_prompts[i] for i in targets_idx])
            targets = [loaded[i] for i in targets_idx]
        if targets_idx:
            sims = self._metric_obj().similarity(pred_imgs, targets)
            for i, s in zip(targets_idx, sims, strict=True):
                out[i] = float(min(max(s, 0.0), 1.0))
        return out


def build_image_backend(pred: PredictionConfig) -> SyntheticImageBackend | DiffusersImageBackend | None:
    """The image backend named by ``pred.image_backend`` (None for "none" or w_img == 0)."""
    if pred.image_backend == "none" or pred.w_img <= 0:
        return None
    if pred.image_backend == "synthetic":
        return SyntheticImageBackend(size=pred.synthetic.size)
    return DiffusersImageBackend(pred.diffusers)
