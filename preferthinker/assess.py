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
by the checkpoint's ``calibration.json`` when there is one (``preferthinker.calibration``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preferthinker.prompting import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MAX_REFERENCES,
    STYLES,
    ImageLoadError,
    build_messages,
    load_image,
)
from preferthinker.calibration import CalibrationError, Calibrator, load_calibrator, pair_features, pair_probability
from preferthinker.ranking import Comparison, RankEntry, Ranking, rank_from_comparisons
from preferthinker.response import Assessment, parse_response

log = logging.getLogger("preferthinker.assess")

__all__ = [
    "AssessInputError",
    "Assessor",
    "Comparison",
    "PromptSettings",
    "Profile",
    "RankEntry",
    "Ranking",
    "Verdict",
    "collect_images",
    "read_prompt_settings",
    "resolve_checkpoint",
]

SETTINGS_FILE = "preferthinker.json"
MAX_CANDIDATES = 16  # rank: N candidates cost N*(N-1) generations (16 -> 240)
PROFILE_MAX_NEW_TOKENS = 384  # profile(): the two profile blocks come first and are short
OFFICIAL_REPETITION_PENALTY = 1.15  # official evaluation decoding for the released checkpoint


class AssessInputError(ValueError):
    """Inputs the Assessor cannot work with (no references on a side, too few/many candidates, ...)."""


# --------------------------------------------------------------------------------------------------
# inputs


def _image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


@dataclass
class ImageInput:
    """One image as given by the caller: the object to load and a label for messages and output."""

    source: Any
    label: str


def _label(obj: Any, what: str, index: int) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, Image.Image):
        return f"{what}[{index}] (PIL image {obj.width}x{obj.height})"
    if isinstance(obj, np.ndarray):
        return f"{what}[{index}] (array {'x'.join(map(str, obj.shape))})"
    return f"{what}[{index}] ({type(obj).__name__})"


def collect_images(images: Any, *, what: str) -> tuple[list[ImageInput], list[str]]:
    """Expand what the caller passed into a flat list of images, plus notes about what was skipped.

    ``images`` is one item or a sequence of items; an item is a file path, a folder (its image files,
    sorted by name; other files are skipped and noted; subfolders are not entered), a PIL image, an
    HxW(xC) array, or an NxHxWxC array (N images). Nothing is opened here (``load_image`` does that),
    but a path that does not exist is an ``ImageLoadError`` at once, and so is a folder with no image.
    """
    if images is None:
        return [], []
    if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        items: list[Any] = [images]
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, np.ndarray):
        raise ImageLoadError(f"{what}: array must be HxW, HxWxC or NxHxWxC, got shape {images.shape}")
    elif isinstance(images, Iterable):
        items = list(images)
    else:
        raise AssessInputError(f"{what}: expected paths, folders, PIL images or arrays, got {type(images).__name__}")

    exts = _image_extensions()
    out: list[ImageInput] = []
    notes: list[str] = []
    for obj in items:
        if isinstance(obj, (str, os.PathLike)):
            path = Path(obj).expanduser()
            if path.is_dir():
                files = sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
                found = [p for p in files if p.is_file() and p.suffix.lower() in exts]
                skipped = [p.name + ("/" if p.is_dir() else "") for p in files if p not in found]
                if not found:
                    raise ImageLoadError(f"{what}: folder {path} contains no image files"
                                         + (f" (only {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else " (it is empty)"))
                if skipped:
                    shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
                    notes.append(f"{what} folder {path}: skipped {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'} ({shown})")
                out += [ImageInput(str(p), str(p)) for p in found]
                continue
            if not path.exists():
                raise ImageLoadError(f"{what}: file does not exist: {path}")
            out.append(ImageInput(str(path), str(path)))
        elif isinstance(obj, (Image.Image, np.ndarray)):
            out.append(ImageInput(obj, _label(obj, what, len(out))))
        else:
            raise AssessInputError(f"{what}[{len(out)}]: expected a path, folder, PIL image or array, got {type(obj).__name__}")
    return out, notes


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


def _latest_checkpoint(root: Path) -> str | None:
    finals = [p.parent for pattern in ("grpo/*/final/config.json", "sft/*/final/config.json", "pipeline/*/*/final/config.json")
              for p in root.glob(pattern)]
    return str(max(finals, key=lambda p: (p / "config.json").stat().st_mtime)) if finals else None


def resolve_checkpoint(path: str | os.PathLike | None) -> str:
    """``"latest"`` (or None) -> the newest finished ``final`` folder under ``./outputs`` (SFT, GRPO or
    pipeline runs); anything else is returned as given (``load_model_and_processor`` checks it)."""
    if path is None or str(path) == "latest":
        found = _latest_checkpoint(Path("outputs"))
        if found is None:
            from preferthinker.modeling import ModelLoadError

            raise ModelLoadError("no trained checkpoint found under ./outputs (outputs/{sft,grpo}/<run>/final or "
                                 "outputs/pipeline/<run>/<stage>/final); pass the checkpoint folder explicitly (--model CKPT)")
        return found
    return os.fspath(path)


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class Profile:
    """The preference and non-preference profiles the model predicts from the references alone."""

    preference: dict[str, str] | None
    non_preference: dict[str, str] | None
    preference_text: str | None
    non_preference_text: str | None
    raw: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Verdict(Assessment):
    """An ``Assessment`` of (Image A, Image B) plus the probability the user prefers Image A.

    The pair is judged in both orders; ``answer`` and the scores are the response for the order given
    (A first), ``probability`` combines both orders' evidence (``preferthinker.calibration``):
    ``calibrated`` says whether a fitted ``calibration.json`` was applied, ``preferred`` is the image
    with probability >= 0.5 (the position-debiased verdict) and ``swapped_answer`` the answer of the
    swapped order in the original names ("Image A" = the same image)."""

    probability: float | None = None
    calibrated: bool = False
    preferred: str | None = None
    swapped_answer: str | None = None
    answer_logodds: float | None = None
    evidence: dict[str, Any] | None = None


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
                 *, max_candidates: int = MAX_CANDIDATES, path: str | None = None, calibrator: Calibrator | None = None):
        from preferthinker.evaluation.generate import GenerationSettings, Generator

        self.calibrator = calibrator  # None: probabilities are the documented uncalibrated fallback
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
    ) -> Assessor:
        """Load a checkpoint folder (a PreferThinker run's ``final``, a ``checkpoint-N``, a LoRA adapter,
        the released model or any Qwen2.5-VL checkpoint; ``"latest"``: the newest run under ./outputs).

        Prompt settings (style, system, max_refs) come from the checkpoint's records (module docstring),
        else the official prompt; the pixel bounds from the checkpoint's saved processor. Any argument
        given here overrides them. Decoding is greedy; ``max_new_tokens`` defaults to 512 for the compact
        prompt (as the tiny default's evaluation) and 4096 for the official one (official evaluation), ``repetition_penalty`` to 1.0 for checkpoints that carry a
        PreferThinker record and to the official evaluation's 1.15 for those that do not (the released model).

        Raises ``ModelLoadError`` for a path that is not a checkpoint.
        """
        from preferthinker.evaluation.generate import GenerationSettings
        from preferthinker.modeling import load_model_and_processor

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
        return cls(model, processor, settings, gen, max_candidates=max_candidates, path=path, calibrator=calibrator)

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

    def _verdict(self, first: tuple[str, float | None], second: tuple[str, float | None]) -> Verdict:
        """A Verdict from the responses to (A, B) and to the swapped prompt (B shown as Image A)."""
        ab, ba = parse_response(first[0]), parse_response(second[0])
        ev_ab = {"answer": ab.answer, "total_a": ab.total_a, "total_b": ab.total_b, "answer_logodds": first[1]}
        ev_ba = {"answer": ba.answer, "total_a": ba.total_a, "total_b": ba.total_b, "answer_logodds": second[1]}
        features = pair_features(ev_ab, ev_ba)
        p, calibrated = pair_probability(features, self.calibrator)
        back = {"Image A": "Image B", "Image B": "Image A"}.get(ba.answer)
        return Verdict(**{f.name: getattr(ab, f.name) for f in dataclasses.fields(Assessment)}, probability=p,
                       calibrated=calibrated, preferred="Image A" if p >= 0.5 else "Image B", swapped_answer=back,
                       answer_logodds=first[1], evidence={k: v for k, v in features.items() if k != "has_logodds"})

    def _check_parsed(self, assessments: Sequence[Assessment]) -> None:
        bad = sum(a.answer is None for a in assessments)
        if bad:
            self._note(f"{bad} of {len(assessments)} responses had no readable <answer>; unreadable fields are None "
                       "(raw text in .raw)")

    # ---------------------------------------------------------------------------------------------
    # public API

    def assess(self, liked: Any, disliked: Any, image_a: Any, image_b: Any) -> Verdict:
        """Compare two candidates for the user: profiles, per-element 0-5 scores with rationales, totals,
        the answer ("Image A" | "Image B"), the raw response, and ``probability`` = P(user prefers Image A)
        from both orders (see ``Verdict``; the pair is generated twice, in one batch). Fields the model did
        not write readably are None (``format_ok`` tells whether the response followed the official format)."""
        self.last_notes, self.last_inputs = [], {}
        liked_imgs, disliked_imgs = self._references(liked, disliked)
        a, label_a = self._candidate(image_a, "image_a")
        b, label_b = self._candidate(image_b, "image_b")
        self.last_inputs.update(image_a=label_a, image_b=label_b)
        first, second = self._generate([self._messages(liked_imgs, disliked_imgs, a, b), self._messages(liked_imgs, disliked_imgs, b, a)])
        out = self._verdict(first, second)
        self._check_parsed([out])
        return out

    def assess_batch(self, requests: Sequence[Sequence[Any] | dict]) -> list[Verdict]:
        """Several ``assess`` calls in one batched generation. Each request is ``(liked, disliked, image_a,
        image_b)`` or a dict with those keys. ``last_inputs["requests"]`` lists each request's inputs."""
        self.last_notes, self.last_inputs = [], {}
        prompts, inputs = [], []
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
            prompts += [self._messages(liked_imgs, disliked_imgs, a, b), self._messages(liked_imgs, disliked_imgs, b, a)]
        self.last_inputs = {"requests": inputs}
        scored = self._generate(prompts)
        out = [self._verdict(scored[k], scored[k + 1]) for k in range(0, len(scored), 2)]
        self._check_parsed(out)
        return out

    def profile(self, liked: Any, disliked: Any) -> Profile:
        """Predict the user's preference and non-preference profiles from the references alone.

        The model always writes the profiles first, before it looks at any candidate, so this is the
        first two blocks of an ordinary response. The candidate slots are filled with the first liked
        and the first disliked reference (no outside image enters the prompt), and generation is capped
        at ``PROFILE_MAX_NEW_TOKENS``. Elements the model did not write readably leave a profile None."""
        self.last_notes, self.last_inputs = [], {}
        liked_imgs, disliked_imgs = self._references(liked, disliked)
        text = self._generate([self._messages(liked_imgs, disliked_imgs, liked_imgs[0], disliked_imgs[0])], PROFILE_MAX_NEW_TOKENS)[0][0]
        a = parse_response(text)
        if a.preference is None or a.non_preference is None:
            self._note("the response did not contain both profiles with all five elements; missing ones are None")
        return Profile(a.preference, a.non_preference, a.preference_text, a.non_preference_text, text)

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
