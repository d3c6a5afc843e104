"""The similarity-aware prediction reward (paper §5): one callable per profile side, sharing one scorer.

``r_side = (w_text * s_text + w_img * s_img) / (w_text + w_img)`` in [0, 1], with s_text the MiniLM cosine
of the cleaned profile strings (``similarity.py``) and s_img from the configured image backend
(``backends.py``). The hack defences of the profile blocks (missing, repeated, empty, copied, unreadable,
oversize) live here; see ``docs/rewards.md``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from preferthinker.rewards.backends import ImageQuery, build_image_backend
from preferthinker.rewards.basic import Reward
from preferthinker.rewards.config import DEFAULT_MAX_CHARS, PredictionConfig, check_prediction, resolve_device
from preferthinker.rewards.inputs import SIDES, MetricSink, blocks_exact, column, first, parse_cached, read_gold_profile, stable_seed
from preferthinker.runtime import ConfigError

log = logging.getLogger("preferthinker.rewards")

MAX_PROFILE_CHARS = 1_000  # an unreadable profile block is cut to this before embedding (MiniLM reads 256 tokens)


class ProfileScorer:
    """Shared by the two profile rewards: the text embedder and the image backend, loaded on first use
    and dropped when pickled (each process reloads its own)."""

    def __init__(self, prediction: PredictionConfig, image_backend: Any = "from_config"):
        self.pred = prediction
        self._embedder = None
        self.image_backend = build_image_backend(prediction) if image_backend == "from_config" else image_backend

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_embedder"] = None
        return state

    def embedder(self) -> Any:
        if self._embedder is None:
            from preferthinker.similarity import TextEmbedder, get_default_embedder

            p = self.pred
            if (p.text_model, p.text_device, p.text_batch_size) == _DEFAULT_TEXT:
                self._embedder = get_default_embedder()  # one MiniLM per process, shared with evaluation
            else:
                self._embedder = TextEmbedder(p.text_model, device=resolve_device(p.text_device), batch_size=p.text_batch_size)
        return self._embedder


_DEFAULT_TEXT = tuple(f.default for f in fields(PredictionConfig) if f.name in ("text_model", "text_device", "text_batch_size"))

_TERM_FREE_WORDS = {"art", "arts", "style", "styles", "artistic", "color", "colour", "colors", "colours",
                    "medium", "media", "saturation", "detail", "details", "level", "of", "artisticmedium", "artstyles",
                    "artstyle", "none", "n", "a", "na", "null", "unknown", "term"}


def _has_terms(block: str) -> bool:
    """False when a profile block holds no term at all: only element names, quotes and punctuation
    (``"Art Styles": "", ...``), or placeholders such as "N/A" / "none"."""
    words = re.findall(r"[a-z0-9]+", block.lower())
    return any(w not in _TERM_FREE_WORDS for w in words)


class ProfileReward(Reward):
    """Similarity-aware prediction reward for one side (``pref`` or ``nonpref``), in [0, 1]::

        r = (w_text * s_text + w_img * s_img) / (w_text + w_img)

    * ``s_text``: cosine similarity (clamped to [0, 1]) of all-MiniLM-L6-v2 embeddings of the cleaned
      predicted and gold profile strings (the released code's computation), batched and cached;
    * ``s_img``: the image backend's similarity of images rendered from the two profiles; where it is
      unavailable (backend "none", no content seed / reference image, gold terms the synthetic renderer
      cannot draw, a failed T2I batch) r = s_text and the fallback rate is logged. A backend's
      ``ConfigError`` (a model that cannot load) stops the run with its reason instead.

    None for rows without a gold profile of this side (real-user data); 0.0 when the block is missing,
    repeated, empty, identical to the other side's block, or the output is oversize.

    Example (``image_backend: none``; needs the bundled MiniLM model)::

        >>> r = ProfileReward("pref", PredictionConfig(image_backend="none"))
        >>> r(["<visual preference profile></visual preference profile>"], prefer_attributes=[None])
        [None]
    """

    def __init__(self, side: str, prediction: PredictionConfig | Mapping | None = None, max_chars: int = DEFAULT_MAX_CHARS,
                 scorer: ProfileScorer | None = None):
        if side not in SIDES:
            raise ConfigError(f"ProfileReward side must be one of {list(SIDES)}, got {side!r}")
        self.name = f"{side}_profile"
        super().__init__(max_chars)
        self.side = side
        self.scorer = scorer if scorer is not None else ProfileScorer(check_prediction(prediction))

    def __repr__(self) -> str:
        p = self.scorer.pred
        return f"ProfileReward({self.side!r}, w_text={p.w_text}, w_img={p.w_img}, image_backend={p.image_backend!r})"

    def __call__(self, completions: Sequence[Any], log_metric: Any = None, log_extra: Any = None, **kwargs: Any) -> list[float | None]:
        texts = self._texts(completions)
        n = len(texts)
        gold_name = SIDES[self.side]["gold"]
        gold_col = column(kwargs, (gold_name,), n)
        golds = [None] * n if gold_col is None else [read_gold_profile(g, gold_name, i) for i, g in enumerate(gold_col)]
        out: list[float | None] = [None] * n
        status: list[str | None] = [None] * n  # per-sample reason, for the rates below
        jobs: list[tuple[int, Any, dict, bool]] = []  # (row, dict or raw text, gold, parsed?)
        for i, (text, gold) in enumerate(zip(texts, golds)):
            if gold is None:
                continue  # no gold profile for this side: the reward does not apply
            status[i], own = self._read_block(text)
            if own is None:
                out[i] = 0.0
            else:
                jobs.append((i, own, gold, status[i] == "parsed"))

        s_text = self._text_scores(jobs, n)
        s_img, img_error, img_jobs = self._image_scores(jobs, n, kwargs)
        fallback = self._combine(jobs, s_text, s_img, out)

        sink = MetricSink(self.name, log_metric)
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
        if img_jobs and not img_error:  # after a failed batch the backend's counters describe an older one
            backend = self.scorer.image_backend
            sink.mean("oov_rate", [getattr(backend, "last_oov_rate", None)])
            sink.mean("gold_oov_rate", [getattr(backend, "last_gold_oov_rate", None)])
            missing = getattr(backend, "last_reference_missing", None)  # diffusers, target reference_image
            if missing is not None and backend.cfg.target == "reference_image":
                sink.mean("ref_missing_rate", [missing / img_jobs])
        if callable(log_extra):
            log_extra(f"{self.name}_s_text", s_text)
            log_extra(f"{self.name}_s_img", s_img)
        return out

    def _read_block(self, text: str) -> tuple[str, Any]:
        """(status, what to score) for one completion; what is None when the side scores 0.0 unread:
        a dict (readable block), the cleaned-up raw block text (unreadable), or None."""
        if len(text) > self.max_chars:
            return "oversize", None
        a = parse_cached(text)
        pref = self.side == "pref"
        own_raw, own = (a.preference_text, a.preference) if pref else (a.non_preference_text, a.non_preference)
        if own_raw is None or not blocks_exact(a, SIDES[self.side]["tag"]):
            return "missing", None
        if not _has_terms(own_raw):
            return "empty", None
        other_raw, other = (a.non_preference_text, a.non_preference) if pref else (a.preference_text, a.preference)
        if other_raw is not None and _profile_key(own, own_raw) == _profile_key(other, other_raw):
            return "copied", None
        if own is not None:
            return "parsed", own
        return "unparsed", own_raw[:MAX_PROFILE_CHARS]

    def _text_scores(self, jobs: list[tuple[int, Any, dict, bool]], n: int) -> list[float | None]:
        s_text: list[float | None] = [None] * n
        if jobs and self.scorer.pred.w_text > 0:
            from preferthinker.similarity import profile_text_similarity

            sims = profile_text_similarity(self.scorer.embedder(), [j[1] for j in jobs], [j[2] for j in jobs])
            for (i, *_), s in zip(jobs, sims, strict=True):
                s_text[i] = None if s is None else float(min(max(s, 0.0), 1.0))
        return s_text

    def _image_scores(self, jobs: list[tuple[int, Any, dict, bool]], n: int, kwargs: Mapping[str, Any]
                      ) -> tuple[list[float | None], float, int]:
        """(s_img per row, 1.0 if the backend failed on this batch, number of image queries)."""
        s_img: list[float | None] = [None] * n
        backend = self.scorer.image_backend
        img_jobs = [j for j in jobs if j[3]] if backend is not None else []
        if not img_jobs:
            return s_img, 0.0, 0
        seeds = self._content_seed(kwargs, n)
        prompts = column(kwargs, ("reference_prompt_list",), n) or [None] * n
        refs = column(kwargs, SIDES[self.side]["refs"], n) or [None] * n
        roots = column(kwargs, ("image_root",), n) or [None] * n
        queries = [
            ImageQuery(pred=pred, true=gold, side=self.side, content_seed=seeds[i], reference_prompt=first(prompts[i]),
                       reference_image=first(refs[i]), image_root=None if roots[i] is None else str(roots[i]), where=f"row {i}")
            for i, pred, gold, _ in img_jobs
        ]
        img_error = 0.0
        try:
            sims = backend.similarity(queries)
        except ConfigError:
            raise  # a setup problem (a model that cannot load): stop with the reason
        except Exception as exc:  # a transient T2I/metric failure must not kill the step: text-only, counted
            log.warning("%s: image backend failed (%s: %s); using text-only scores for this batch",
                        self.name, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            sims, img_error = [None] * len(queries), 1.0
        refusals = getattr(backend, "last_refusals", None)
        if refusals and not img_error:
            log.debug("%s: %d predicted profile(s) refused by the synthetic renderer (s_img 0.0); first: %s",
                      self.name, len(refusals), refusals[0])
        gold_refusal = getattr(backend, "last_gold_refusal", None)
        if gold_refusal and not img_error and not getattr(backend, "warned_gold", False):
            backend.warned_gold = True  # once per process: every step of such a run would say the same
            log.warning("%s: the synthetic image backend cannot draw this data's gold profiles, so s_img is left out "
                        "(text-only, counted as gold_oov_rate): %s. On real data use reward=paper_real "
                        "(text-to-image + DreamSim) or reward.prediction.image_backend=none", self.name, gold_refusal)
        for (i, *_), s in zip(img_jobs, sims, strict=True):
            s_img[i] = s
        return s_img, img_error, len(img_jobs)

    def _combine(self, jobs: list[tuple[int, Any, dict, bool]], s_text: list[float | None], s_img: list[float | None],
                 out: list[float | None]) -> list[float]:
        """Write each job's reward into ``out``; return the per-job image fallback flags (for the rate)."""
        pred_cfg = self.scorer.pred
        w_t, w_i = pred_cfg.w_text, (pred_cfg.w_img if self.scorer.image_backend is not None else 0.0)
        fallback: list[float] = []
        for i, _, _, parsed in jobs:
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
        return fallback

    def _content_seed(self, kwargs: Mapping[str, Any], n: int) -> list[int | None]:
        """content_seed column; else a stable hash of reference_prompt_list[0] or the first preferred image."""
        seeds = column(kwargs, ("content_seed",), n) or [None] * n
        prompts = column(kwargs, ("reference_prompt_list",), n) or [None] * n
        refs = column(kwargs, SIDES["pref"]["refs"], n) or [None] * n
        out: list[int | None] = []
        for s, p, r in zip(seeds, prompts, refs):
            p, r = first(p), first(r)
            if s is not None:
                out.append(int(s))
            elif isinstance(p, str) and p:
                out.append(stable_seed(p))
            elif isinstance(r, (str, os.PathLike)):
                out.append(stable_seed(str(r)))
            else:
                out.append(None)
        return out


def _profile_key(parsed: dict | None, raw: str | None) -> str:
    """What "the same profile" means: equal cleaned strings (case, quotes, spacing ignored)."""
    from preferthinker.similarity import clean_profile_text

    if parsed is not None:
        return clean_profile_text(parsed)
    return clean_profile_text(raw or "")


def validate_prediction(prediction: PredictionConfig | Mapping | None) -> PredictionConfig:
    """A checked copy of a prediction config (kept for callers of the single-module version)."""
    return check_prediction(prediction)
