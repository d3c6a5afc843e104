"""The user-facing assessor: score, explain and rank images for one user with a PreferThinker checkpoint.

    >>> from preferthinker import Assessor
    >>> assessor = Assessor.from_pretrained("outputs/sft/<run>/final")          # or any Qwen2.5-VL folder
    >>> a = assessor.assess(["liked1.png", "liked2.png"], ["disliked.png"], "a.png", "b.png")
    >>> a.answer, a.total_a, a.total_b, a.preference["Color"]
    >>> assessor.profile("liked_folder/", "disliked_folder/").preference
    >>> for entry in assessor.rank("liked_folder/", "disliked_folder/", ["c1.png", "c2.png", "c3.png"]):
    ...     print(entry.rank, entry.candidate, entry.wins, entry.mean_total)

Images may be given as paths, folders (image files sorted by name), PIL images or HxWx3 arrays. They are
loaded and resized with ``prompting.load_image`` at the checkpoint processor's pixel bounds, and the
prompt is built with ``prompting.build_messages`` in the style the checkpoint was trained with, read from

1. ``<checkpoint>/preferthinker.json`` (written by the training recipes next to the weights), else
2. ``<checkpoint>/../sft_config.yaml`` or ``../grpo_config.yaml`` (the resolved run config), else
3. the official prompt (the right choice for the released PreferThinker and other real checkpoints).

Generation goes through ``evaluation.generate.Generator`` (greedy, as the official protocol), so the
Assessor, the evaluation and the training rollouts read the same prompts and the same decoding.

Ranking (``Assessor.rank``) is a position-debiased round robin; see ``preferthinker.ranking`` for the scheme.
Every verdict carries ``probability`` = P(user prefers Image A) from both candidate orders, calibrated
by the checkpoint's ``calibration.json`` when there is one (``preferthinker.calibration``), and a
``status``: when the given order has no readable answer the swapped order's answer is used, then a few
seeded sampled retries, and if still nothing ``status="no_answer"`` with every raw text kept
(``preferthinker.retry``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from preferthinker.prompting import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MAX_REFERENCES,
    STYLES,
    build_messages,
    load_image,
)
from preferthinker.image_inputs import AssessInputError, ImageInput, collect_images
from preferthinker.calibration import CalibrationError, Calibrator, load_calibrator, pair_features, pair_probability
from preferthinker.ranking import Comparison, RankEntry, Ranking, rank_from_comparisons
from preferthinker.response import Assessment, parse_response
from preferthinker.retry import RetryPolicy, choose, first_readable, in_given_names, make_attempt, retry_orders, sampling

log = logging.getLogger("preferthinker.assess")

__all__ = [
    "AssessInputError",
    "Assessor",
    "Comparison",
    "PromptSettings",
    "Profile",
    "RankEntry",
    "Ranking",
    "RetryPolicy",
    "Verdict",
    "collect_images",
    "read_prompt_settings",
    "resolve_checkpoint",
]

SETTINGS_FILE = "preferthinker.json"
MAX_CANDIDATES = 16  # rank: N candidates cost N*(N-1) generations (16 -> 240)
PROFILE_MAX_NEW_TOKENS = 384  # profile(): the two profile blocks come first and are short
OFFICIAL_REPETITION_PENALTY = 1.15  # official evaluation decoding for the released checkpoint


# --------------------------------------------------------------------------------------------------
# inputs


# --------------------------------------------------------------------------------------------------
# checkpoint settings


@dataclass
class PromptSettings:
    """How prompts are written and images sized for one checkpoint (must match its training)."""

    style: str = "official"
    system: str | None = "official"
    max_refs: int = MAX_REFERENCES
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    stage: str | None = None  # "sft" | "grpo" when the checkpoint comes from a PreferThinker run
    source: str = "defaults"  # where the prompt settings were read from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_prompt_settings(path: str | os.PathLike) -> dict[str, Any]:
    """Prompt settings a checkpoint folder records, as ``{"style", "system", "max_refs", "min_pixels",
    "max_pixels", "stage", "source"}`` (only the keys found, ``source`` always). Looks for
    ``preferthinker.json`` in the folder, then the run's ``sft_config.yaml`` / ``grpo_config.yaml`` one
    level up (two for ``checkpoints/checkpoint-N`` and LoRA ``final/adapter`` folders). Returns
    ``{"source": "defaults"}`` when nothing is found."""
    folder = Path(path).expanduser()
    nested = folder.name == "adapter" or folder.name.startswith("checkpoint-")
    for candidate in [folder / SETTINGS_FILE] + ([folder.parent / SETTINGS_FILE] if folder.name == "adapter" else []):
        if candidate.is_file():
            try:
                rec = json.loads(candidate.read_text(encoding="utf-8"))
                prompt = rec.get("prompt") or {}
            except (OSError, ValueError, AttributeError) as e:
                raise AssessInputError(f"{candidate}: unreadable settings file ({e}); fix or delete it") from None
            found = {k: prompt[k] for k in ("style", "system", "max_refs") if k in prompt}
            found.update({k: rec[k] for k in ("min_pixels", "max_pixels", "stage") if rec.get(k) is not None})
            return {**found, "source": str(candidate)}
    for run_dir in [folder.parent] + ([folder.parent.parent] if nested else []):
        configs = [run_dir / f"{stage}_config.yaml" for stage in ("grpo", "sft")]
        configs = sorted((c for c in configs if c.is_file()), key=lambda c: c.stat().st_mtime, reverse=True)
        if configs:
            from omegaconf import OmegaConf

            cfg = OmegaConf.load(configs[0])
            found = {}
            for key, dotted in (("style", "prompt.style"), ("system", "prompt.system"), ("max_refs", "prompt.max_refs"),
                                ("min_pixels", "model.min_pixels"), ("max_pixels", "model.max_pixels")):
                value = OmegaConf.select(cfg, dotted, default="__missing__", throw_on_missing=False)
                if value != "__missing__":
                    found[key] = value
            found["stage"] = configs[0].name.split("_")[0]
            return {**found, "source": str(configs[0])}
    return {"source": "defaults"}


def _processor_bounds(processor: Any) -> tuple[int | None, int | None]:
    ip = getattr(processor, "image_processor", None)
    size = dict(getattr(ip, "size", None) or {})
    lo = size.get("shortest_edge", getattr(ip, "min_pixels", None))
    hi = size.get("longest_edge", getattr(ip, "max_pixels", None))
    return (int(lo) if lo else None), (int(hi) if hi else None)


def resolve_checkpoint(path: str | os.PathLike | None) -> str:
    """``latest`` (or None), ``latest_sft``, ``latest_grpo`` -> the newest finished checkpoint under ``./outputs`` by
    ``preferthinker.runtime.resolve_checkpoint`` (the rule GRPO and eval use); anything else is returned as given
    (``load_model_and_processor`` checks it)."""
    from preferthinker.runtime import resolve_checkpoint as resolve

    return resolve(None if path is None else os.fspath(path), key="--model")


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class Profile:
    """The preference and non-preference profiles the model predicts from the references alone.
    ``status``: ``ok`` (the greedy response had both), ``retried`` (a sampled retry had them) or ``no_answer``
    (none had both: the greedy response's readable parts are kept); ``attempts`` holds every raw text."""

    preference: dict[str, str] | None
    non_preference: dict[str, str] | None
    preference_text: str | None
    non_preference_text: str | None
    raw: str
    status: str = "ok"
    attempts: list[str] | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Verdict(Assessment):
    """An ``Assessment`` of (Image A, Image B) plus the probability the user prefers Image A.

    The pair is judged in both orders; ``answer`` and the scores are the response for the order given
    (A first), ``probability`` combines both orders' evidence (``preferthinker.calibration``):
    ``calibrated`` says whether a fitted ``calibration.json`` was applied, ``preferred`` is the image
    with probability >= 0.5 (the position-debiased verdict) and ``swapped_answer`` the answer of the
    swapped order in the original names ("Image A" = the same image).

    ``status`` says where the reported fields come from (``preferthinker.retry``): ``ok`` (the given order),
    ``from_swapped_order`` (the given order had no readable answer; the swapped one's, mapped back to these
    names), ``retried`` (a sampled retry) or ``no_answer`` (nothing readable: ``answer`` and ``preferred`` are
    None). ``attempts`` lists every generation made for the pair (order, sampled, raw text, answer)."""

    probability: float | None = None
    calibrated: bool = False
    preferred: str | None = None
    swapped_answer: str | None = None
    answer_logodds: float | None = None
    evidence: dict[str, Any] | None = None
    status: str = "ok"
    attempts: list[dict] | None = None


# --------------------------------------------------------------------------------------------------
# the assessor


class Assessor:
    """Score, explain and rank images for one user with a PreferThinker (Qwen2.5-VL) checkpoint.

    Build it with ``Assessor.from_pretrained(path)``. Every method takes the user's liked and disliked
    references (one or more each; paths, folders, PIL images or arrays) and uses the first
    ``settings.max_refs`` of each side (the rest are ignored, and ``last_notes`` says so).

    ``last_notes`` holds the notes of the most recent call (references truncated, files skipped in a
    folder, unreadable responses); they are also logged on the ``preferthinker.assess`` logger.
    """

    def __init__(self, model: Any, processor: Any, settings: PromptSettings | None = None, generation: Any = None,
                 *, max_candidates: int = MAX_CANDIDATES, path: str | None = None, calibrator: Calibrator | None = None,
                 retry: RetryPolicy | None = None):
        from preferthinker.evaluation.generate import GenerationSettings, Generator

        self.calibrator = calibrator  # None: probabilities are the documented uncalibrated fallback
        self.retry = retry or RetryPolicy()  # what assess() tries when a response has no readable answer
        self.progress = False  # rank(): a tqdm bar over the generations (the CLI turns it on)
        self.model = model
        self.processor = processor
        self.settings = settings or PromptSettings()
        self.generator = Generator(model, processor, generation or GenerationSettings())
        self.max_candidates = int(max_candidates)
        self.path = path
        self.last_notes: list[str] = []
        self.last_inputs: dict[str, Any] = {}
        if self.settings.style not in STYLES:
            raise AssessInputError(f"prompt style {self.settings.style!r} is not one of {STYLES}")
        if int(self.settings.max_refs) < 1:
            raise AssessInputError(f"max_refs must be >= 1, got {self.settings.max_refs}")

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike = "latest",
        *,
        device: str | None = "auto",
        dtype: Any = "auto",
        attn_implementation: str = "auto",
        style: str | None = None,
        system: str | None = None,
        max_refs: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
        batch_size: int = 8,
        max_candidates: int = MAX_CANDIDATES,
        retries: int = 2,
        retry_temperature: float = 0.7,
        retry_seed: int = 0,
    ) -> Assessor:
        """Load a checkpoint folder (a PreferThinker run's ``final``, a ``checkpoint-N``, a LoRA adapter,
        the released model or any Qwen2.5-VL checkpoint; ``"latest"``: the newest run under ./outputs).

        Prompt settings (style, system, max_refs) come from the checkpoint's records (module docstring),
        else the official prompt; the pixel bounds from the checkpoint's saved processor. Any argument
        given here overrides them. Decoding is greedy; ``max_new_tokens`` defaults to 512 for the compact
        prompt (as the tiny default's evaluation) and 4096 for the official one (official evaluation), ``repetition_penalty`` to 1.0 for checkpoints that carry a
        PreferThinker record and to the official evaluation's 1.15 for those that do not (the released model).

        ``retries`` / ``retry_temperature`` / ``retry_seed``: the sampled retries ``assess`` makes for a pair
        whose two greedy orders have no readable answer (``RetryPolicy``; 0 turns them off).

        Raises ``ModelLoadError`` for a path that is not a checkpoint.
        """
        from preferthinker.evaluation.generate import GenerationSettings
        from preferthinker.modeling import load_model_and_processor

        try:  # checked before the (slow) model load
            retry = RetryPolicy(retries=retries, temperature=retry_temperature, seed=int(retry_seed))
        except (TypeError, ValueError) as e:
            raise AssessInputError(str(e)) from None
        path = resolve_checkpoint(path)
        found = read_prompt_settings(path) if Path(path).expanduser().is_dir() else {"source": "defaults"}
        model, processor = load_model_and_processor(path, dtype=dtype, attn_implementation=attn_implementation, device=device,
                                                    min_pixels=min_pixels, max_pixels=max_pixels)
        proc_lo, proc_hi = _processor_bounds(processor)
        if system is None:  # an explicit style brings its own system prompt; else what the checkpoint recorded
            system = style if style else found["system"] if "system" in found else found.get("style") or "official"
        style = style or found.get("style") or "official"
        settings = PromptSettings(
            style=str(style),
            system=None if system in (None, "none") else str(system),
            max_refs=int(max_refs if max_refs is not None else found.get("max_refs") or MAX_REFERENCES),
            min_pixels=int(min_pixels or proc_lo or found.get("min_pixels") or DEFAULT_MIN_PIXELS),
            max_pixels=int(max_pixels or proc_hi or found.get("max_pixels") or DEFAULT_MAX_PIXELS),
            stage=found.get("stage"),
            source=found["source"],
        )
        if max_new_tokens is None:
            max_new_tokens = 4096 if settings.style == "official" else 512
        if repetition_penalty is None:
            repetition_penalty = OFFICIAL_REPETITION_PENALTY if settings.source == "defaults" else 1.0
        gen = GenerationSettings(max_new_tokens=int(max_new_tokens), repetition_penalty=float(repetition_penalty),
                                 do_sample=False, batch_size=int(batch_size))
        log.info("assessor: %s, prompt %s/%s, max_refs %d, pixels %d..%d (settings from %s)", path, settings.style,
                 settings.system, settings.max_refs, settings.min_pixels, settings.max_pixels, settings.source)
        try:
            calibrator = load_calibrator(path) if Path(path).expanduser().is_dir() else None
        except CalibrationError as e:
            raise AssessInputError(str(e)) from None
        if calibrator is None:
            log.info("no %s/calibration.json: probabilities are uncalibrated (sigmoid of the mean answer log-odds)", path)
        return cls(model, processor, settings, gen, max_candidates=max_candidates, path=path, calibrator=calibrator, retry=retry)

    # ---------------------------------------------------------------------------------------------
    # inputs

    def _note(self, text: str) -> None:
        self.last_notes.append(text)
        log.warning(text)

    def _load(self, item: ImageInput, what: str) -> Image.Image:
        s = self.settings  # a path names itself in load_image's messages; an in-memory image gets its label
        label = what if isinstance(item.source, (str, os.PathLike)) else item.label
        return load_image(item.source, s.min_pixels, s.max_pixels, what=label)

    def _references(self, liked: Any, disliked: Any) -> tuple[list[Image.Image], list[Image.Image]]:
        k = int(self.settings.max_refs)
        sides = {}
        for what, given in (("liked", liked), ("disliked", disliked)):
            items, notes = collect_images(given, what=what)
            for n in notes:
                self._note(n)
            if not items:
                raise AssessInputError(f"need at least one {what} reference image, got none")
            if len(items) > k:
                self._note(f"used the first {k} of {len(items)} {what} references (max_refs={k}); ignored "
                           + ", ".join(os.path.basename(i.label) for i in items[k:k + 3]) + (" ..." if len(items) > k + 3 else ""))
            used = items[:k]
            self.last_inputs[what] = [i.label for i in used]
            self.last_inputs[f"{what}_given"] = len(items)
            sides[what] = [self._load(it, f"{what}[{n}]") for n, it in enumerate(used)]
        return sides["liked"], sides["disliked"]

    def _candidate(self, image: Any, what: str) -> tuple[Image.Image, str]:
        items, _ = collect_images(image, what=what)
        if len(items) != 1:
            raise AssessInputError(f"{what}: expected exactly one image, got {len(items)} (a folder is only accepted by rank)")
        return self._load(items[0], what), items[0].label

    def _messages(self, liked: list, disliked: list, a: Image.Image, b: Image.Image) -> list[dict]:
        s = self.settings
        messages, _ = build_messages(liked, disliked, a, b, style=s.style, system=s.system, max_refs=s.max_refs, embed_images=True)
        return messages

    def _generate(self, batch: list[list[dict]], max_new_tokens: int | None = None, progress: str | None = None
                  ) -> list[tuple[str, float | None]]:
        """(response text, answer log-odds) per prompt, in batches of the generation settings' size."""
        if not batch:
            return []
        gen = self.generator
        saved = gen.settings
        if max_new_tokens is not None:
            gen.settings = dataclasses.replace(saved, max_new_tokens=min(int(max_new_tokens), saved.max_new_tokens))
        try:
            return gen.generate_scored(batch, progress=progress if self.progress else None)
        finally:
            gen.settings = saved

    def _verdicts(self, pairs: list[tuple[list[dict], list[dict]]]) -> list[Verdict]:
        """One Verdict per (given-order prompt, swapped prompt): both greedy orders in one batch, then, for
        the pairs where neither has a readable answer, ``retry.retries`` seeded sampled generations in one
        more batch (``preferthinker.retry``)."""
        scored = self._generate([m for pair in pairs for m in pair])
        tries = [[make_attempt("given", False, scored[2 * k]), make_attempt("swapped", False, scored[2 * k + 1])] for k in range(len(pairs))]
        need = [k for k, t in enumerate(tries) if all(att.answer is None for att, _ in t)]
        orders = retry_orders(self.retry.retries)
        if need and orders:
            batch = [pairs[k][0 if o == "given" else 1] for k in need for o in orders]
            with sampling(self.generator, self.retry.temperature, self.retry.seed):
                extra = self._generate(batch)
            for n, k in enumerate(need):
                tries[k] += [make_attempt(o, True, extra[n * len(orders) + j]) for j, o in enumerate(orders)]
        return [self._verdict(t) for t in tries]

    def _verdict(self, tries: list) -> Verdict:
        """A Verdict from one pair's attempts (given greedy, swapped greedy, sampled...): the fields of the
        attempt ``retry.choose`` picks, the probability from the first readable attempt of each order."""
        status, k = choose(tries)
        chosen = tries[k][1]
        ab = first_readable(tries, "given") or tries[0]
        ba = first_readable(tries, "swapped") or tries[1]
        shown_ba = in_given_names(ba[1])  # back to the names of the prompt it answered (B shown as Image A)
        ev_ab = {"answer": ab[1].answer, "total_a": ab[1].total_a, "total_b": ab[1].total_b, "answer_logodds": ab[0].logodds}
        ev_ba = {"answer": shown_ba.answer, "total_a": shown_ba.total_a, "total_b": shown_ba.total_b, "answer_logodds": ba[0].logodds}
        features = pair_features(ev_ab, ev_ba)
        p, calibrated = pair_probability(features, self.calibrator)
        preferred = None if status == "no_answer" else ("Image A" if p >= 0.5 else "Image B")
        return Verdict(**{f.name: getattr(chosen, f.name) for f in dataclasses.fields(Assessment)}, probability=p,
                       calibrated=calibrated, preferred=preferred, swapped_answer=ba[0].answer, answer_logodds=ab[0].logodds,
                       evidence={k: v for k, v in features.items() if k != "has_logodds"}, status=status,
                       attempts=[att.to_dict() for att, _ in tries])

    def _check_parsed(self, verdicts: Sequence[Verdict]) -> None:
        """Notes on how the answers were found: from the swapped order, from a retry, or not at all."""
        n = len(verdicts)
        swapped = sum(v.status == "from_swapped_order" for v in verdicts)
        retried = sum(v.status == "retried" for v in verdicts)
        bad = sum(v.status == "no_answer" for v in verdicts)
        if swapped:
            self._note(f"{swapped} of {n} responses had no readable <answer> in the given order; the answer, scores and "
                       "rationales come from the swapped order (status from_swapped_order)")
        if retried:
            self._note(f"{retried} of {n} pairs had no readable <answer> in either order; a sampled retry gave one (status retried)")
        if bad:
            self._note(f"{bad} of {n} responses had no readable <answer> after both orders and {self.retry.retries} sampled "
                       "retries (status no_answer); unreadable fields are None, every raw text is in .attempts")

    # ---------------------------------------------------------------------------------------------
    # public API

    def assess(self, liked: Any, disliked: Any, image_a: Any, image_b: Any) -> Verdict:
        """Compare two candidates for the user: profiles, per-element 0-5 scores with rationales, totals,
        the answer ("Image A" | "Image B"), the raw response, and ``probability`` = P(user prefers Image A)
        from both orders (see ``Verdict``; the pair is generated twice, in one batch). With no readable answer
        in either order, up to ``retry.retries`` sampled retries follow; ``status`` says which attempt the
        fields come from and ``attempts`` keeps every raw text. Fields no attempt wrote readably are None
        (``format_ok`` tells whether the response followed the official format)."""
        self.last_notes, self.last_inputs = [], {}
        liked_imgs, disliked_imgs = self._references(liked, disliked)
        a, label_a = self._candidate(image_a, "image_a")
        b, label_b = self._candidate(image_b, "image_b")
        self.last_inputs.update(image_a=label_a, image_b=label_b)
        out = self._verdicts([(self._messages(liked_imgs, disliked_imgs, a, b), self._messages(liked_imgs, disliked_imgs, b, a))])[0]
        self._check_parsed([out])
        return out

    def assess_batch(self, requests: Sequence[Sequence[Any] | dict]) -> list[Verdict]:
        """Several ``assess`` calls in one batched generation. Each request is ``(liked, disliked, image_a,
        image_b)`` or a dict with those keys. ``last_inputs["requests"]`` lists each request's inputs."""
        self.last_notes, self.last_inputs = [], {}
        pairs, inputs = [], []
        for n, req in enumerate(requests):
            if isinstance(req, dict):
                missing = [k for k in ("liked", "disliked", "image_a", "image_b") if k not in req]
                if missing:
                    raise AssessInputError(f"request {n}: missing {missing}")
                req = (req["liked"], req["disliked"], req["image_a"], req["image_b"])
            if len(req) != 4:
                raise AssessInputError(f"request {n}: expected (liked, disliked, image_a, image_b), got {len(req)} items")
            self.last_inputs = {}
            liked_imgs, disliked_imgs = self._references(req[0], req[1])
            a, label_a = self._candidate(req[2], f"request {n} image_a")
            b, label_b = self._candidate(req[3], f"request {n} image_b")
            inputs.append({**self.last_inputs, "image_a": label_a, "image_b": label_b})
            pairs.append((self._messages(liked_imgs, disliked_imgs, a, b), self._messages(liked_imgs, disliked_imgs, b, a)))
        self.last_inputs = {"requests": inputs}
        out = self._verdicts(pairs)
        self._check_parsed(out)
        return out

    def profile(self, liked: Any, disliked: Any) -> Profile:
        """Predict the user's preference and non-preference profiles from the references alone.

        The model always writes the profiles first, before it looks at any candidate, so this is the
        first two blocks of an ordinary response. The candidate slots are filled with the first liked
        and the first disliked reference (no outside image enters the prompt), and generation is capped
        at ``PROFILE_MAX_NEW_TOKENS``. Without both profiles, ``retry.retries`` seeded sampled retries follow
        (``status`` says which answered); elements no attempt wrote readably leave a profile None."""
        self.last_notes, self.last_inputs = [], {}
        liked_imgs, disliked_imgs = self._references(liked, disliked)
        messages = self._messages(liked_imgs, disliked_imgs, liked_imgs[0], disliked_imgs[0])
        texts = [self._generate([messages], PROFILE_MAX_NEW_TOKENS)[0][0]]
        parsed = [parse_response(texts[0])]
        complete = [k for k, a in enumerate(parsed) if a.preference is not None and a.non_preference is not None]
        if not complete and self.retry.retries:
            with sampling(self.generator, self.retry.temperature, self.retry.seed):
                texts += [t for t, _ in self._generate([messages] * self.retry.retries, PROFILE_MAX_NEW_TOKENS)]
            parsed += [parse_response(t) for t in texts[1:]]
            complete = [k for k, a in enumerate(parsed) if a.preference is not None and a.non_preference is not None]
        k = complete[0] if complete else 0
        status = "no_answer" if not complete else "ok" if k == 0 else "retried"
        if status == "retried":
            self._note(f"the greedy response did not contain both profiles; sampled retry {k} of {self.retry.retries} did (status retried)")
        elif status == "no_answer":
            self._note(f"no response ({len(texts)} attempts) contained both profiles with all five elements; missing ones are None "
                       "(status no_answer, every raw text in .attempts)")
        a = parsed[k]
        return Profile(a.preference, a.non_preference, a.preference_text, a.non_preference_text, texts[k], status, texts)

    def rank(self, liked: Any, disliked: Any, candidates: Any, *, max_candidates: int | None = None) -> Ranking:
        """Rank N candidates (paths, folders, PIL images or arrays) for the user, best first.

        Scheme (position-debiased round robin): every unordered pair {i, j} is assessed in both orders,
        (A=i, B=j) and (A=j, B=i), all N(N-1) prompts in one batched greedy generation. In each order
        the preferred candidate gets a win indicator 1 and the other 0; an order whose ``<answer>`` cannot
        be read gives both 0.5 (a tie, reported in ``notes``). A candidate's pair score is the mean of its
        two indicators (so a pair judged differently in the two orders - position bias - is a draw), and
        its ``wins`` is the sum of its pair scores over all opponents (Copeland/Borda-like, 0..N-1).
        Each pair's two orders also give P(i preferred over j) (``preferthinker.calibration``); a
        candidate's ``probability`` is its mean over opponents. Candidates are ordered by ``wins``, then
        ``probability``, then mean total-score margin, then mean own total; entries equal on all four share
        a rank. ``ranking.timing`` holds the generation's pairs/s (a pair = both orders).

        ``max_candidates`` (default 16: 240 generations) caps N; above it this raises AssessInputError.
        Returns a ``Ranking``: a list of ``RankEntry`` (candidate, rank, wins, probability, mean_total,
        mean_margin, rationale, pairwise records), best first, with ``.comparisons`` holding every generation's Assessment.
        """
        self.last_notes, self.last_inputs = [], {}
        cap = int(max_candidates if max_candidates is not None else self.max_candidates)
        liked_imgs, disliked_imgs = self._references(liked, disliked)
        items, notes = collect_images(candidates, what="candidates")
        for n in notes:
            self._note(n)
        n = len(items)
        if n < 2:
            raise AssessInputError(f"rank needs at least two candidates, got {n}")
        if n > cap:
            raise AssessInputError(f"rank compares every pair in both orders, so {n} candidates need {n * (n - 1)} generations; "
                                   f"the limit is {cap} candidates ({cap * (cap - 1)} generations). Raise max_candidates "
                                   f"(--max-candidates) or rank smaller groups")
        labels = [it.label for it in items]
        if len(set(labels)) < n:
            labels = [f"{lab} #{k}" if labels.count(lab) > 1 else lab for k, lab in enumerate(labels)]
        images = [self._load(it, f"candidates[{k}]") for k, it in enumerate(items)]
        self.last_inputs["candidates"] = labels
        order = [pair for i in range(n) for j in range(i + 1, n) for pair in ((i, j), (j, i))]
        t0 = time.perf_counter()
        scored = self._generate([self._messages(liked_imgs, disliked_imgs, images[i], images[j]) for i, j in order],
                                progress=f"ranking {n} candidates")
        seconds = time.perf_counter() - t0
        comparisons = [Comparison(i, j, parse_response(t), lo) for (i, j), (t, lo) in zip(order, scored, strict=True)]
        ranking = rank_from_comparisons(comparisons, labels, self.calibrator)
        ranking.timing = {"pairs": len(order) // 2, "generations": len(order), "seconds": round(seconds, 3),
                          "pairs_per_s": round(len(order) / 2 / max(seconds, 1e-9), 3),
                          "batch_size": self.generator.settings.batch_size}
        for note in ranking.notes:
            self._note(note)
        ranking.notes = list(self.last_notes)
        return ranking
