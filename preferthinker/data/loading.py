"""From official-schema records to what TRL's trainers and our generator take.

One function builds a sample's prompt for every consumer (SFT, GRPO, evaluation, the Assessor):
``sample_inputs``. Images are loaded once with ``prompting.load_image`` at the model's pixel bounds.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from preferthinker.data.refs import RefDraw, draw_refs, record_key
from preferthinker.data.schema import PreferenceRecord, SchemaError, default_image_root, resolve_image
from preferthinker.prompting import ImageLoadError, assistant_message, build_messages, load_image, system_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSpec:
    """How prompts are written and images sized; identical for training, evaluation and serving."""

    style: str = "official"
    system: str | None = "official"
    max_refs: int = 5
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 16384 * 28 * 28
    # render with add_vision_id=True ("Picture N: " before each image): the official eval does, training does not
    vision_ids: bool = False

    @classmethod
    def from_cfg(cls, prompt_cfg: Any, model_cfg: Any) -> PromptSpec:
        return cls(
            style=str(prompt_cfg.style),
            system=None if prompt_cfg.system in (None, "none") else str(prompt_cfg.system),
            max_refs=int(prompt_cfg.max_refs),
            min_pixels=int(model_cfg.min_pixels),
            max_pixels=int(model_cfg.max_pixels),
            vision_ids=bool(prompt_cfg.get("vision_ids", False)),
        )


def image_root_for(path: str | os.PathLike, image_root: str | os.PathLike | None) -> Path:
    return Path(image_root) if image_root else default_image_root(path)


def load_record_images(rec: PreferenceRecord, image_root: Path, spec: PromptSpec, *, where: str = "") -> tuple[list, list, Image.Image, Image.Image]:
    """Open and resize the images one sample uses (the first ``max_refs`` references per side)."""

    def one(rel: str, fld: str) -> Image.Image:
        path = resolve_image(image_root, rel, file=where.rstrip(": ") or None, fld=fld)
        return load_image(path, spec.min_pixels, spec.max_pixels, what=f"{where}field {fld} ({rel})")

    liked = [one(p, f"prefered_images[{i}]") for i, p in enumerate(rec.preferred[: spec.max_refs])]
    disliked = [one(p, f"non_prefered_images[{i}]") for i, p in enumerate(rec.non_preferred[: spec.max_refs])]
    return liked, disliked, one(rec.image_a, "imageA"), one(rec.image_b, "imageB")


def sample_inputs(rec: PreferenceRecord, image_root: Path, spec: PromptSpec, *, embed_images: bool = False, where: str = "") -> tuple[list[dict], list[Image.Image]]:
    """(chat messages, images) of one record's prompt, official order."""
    liked, disliked, a, b = load_record_images(rec, image_root, spec, where=where)
    return build_messages(liked, disliked, a, b, style=spec.style, system=spec.system, max_refs=spec.max_refs, embed_images=embed_images)


def shown_record(rec: PreferenceRecord, ref_draw: RefDraw | None, spec: PromptSpec, seed: int) -> PreferenceRecord:
    """The record as one training row shows it: with ``ref_draw``, a seeded subset of its references per side
    (``preferthinker.data.refs``); without, the record itself (the first ``max_refs`` are cut later). With
    ``ref_draw.cover_profiles`` (``data.refs_cover_profiles``, off by default), a record that labels its liked
    references (``reference_profiles``: synthetic data) keeps one of each liked profile, so a multi-preference
    user's row shows both profiles its target names."""
    if ref_draw is None:
        return rec
    key = record_key(rec.image_a, rec.image_b, rec.preferred, rec.non_preferred)
    liked, disliked = draw_refs(rec.preferred, rec.non_preferred, ref_draw, seed=seed, key=key, max_refs=spec.max_refs,
                                liked_groups=liked_profile_groups(rec) if ref_draw.cover_profiles else None)
    return replace(rec, preferred=liked, non_preferred=disliked)


def liked_profile_groups(rec: PreferenceRecord) -> list[tuple] | None:
    """One hashable label per liked reference, its profile (``reference_profiles.preferred``), or None when the
    record does not label its references. A label list that does not match the liked images is a ValueError
    naming the record: which image shows which profile would be a guess."""
    refs = rec.extra.get("reference_profiles")
    profs = refs.get("preferred") if isinstance(refs, dict) else None
    if not profs:
        return None
    if len(profs) != len(rec.preferred) or not all(isinstance(q, dict) for q in profs):
        raise ValueError(f"record {rec.user_id or rec.image_a!r}: reference_profiles.preferred holds {len(profs)} entries "
                         f"for {len(rec.preferred)} prefered_images (expected one profile object per liked image)")
    return [tuple(sorted((str(k), str(v)) for k, v in q.items())) for q in profs]


def content_seed(rec: PreferenceRecord) -> int:
    """A stable integer per record for the image-similarity reward (same content for pred and truth):
    the record's own ``content_seed`` when the synthetic engine stored one, else a CRC of its first
    preferred image path (of Image A for a record without references)."""
    seed = rec.extra.get("content_seed")
    return int(seed) if seed is not None else zlib.crc32((rec.preferred or [rec.image_a])[0].encode("utf-8"))


def image_token_counts(processor: Any, images: Sequence[Image.Image]) -> list[int]:
    """LM tokens each image expands to, as the processor itself will count them.

    The image processor's ``get_number_of_image_patches`` gives the ViT patch grid it will build
    (``image_grid_thw`` rows' h*w, for the sizes it resizes to), and its merger folds ``merge_size**2``
    patches into one LM token. Asking the processor (rather than assuming 14-pixel patches) keeps the
    count right for any patch build: 14x2 and the tiny 7x4 both give one token per 28x28 pixels.
    Processors without that method are run on the images and their ``image_grid_thw`` is read.
    """
    if not images:
        return []
    image_processor = processor.image_processor
    merge = int(image_processor.merge_size)
    if hasattr(image_processor, "get_number_of_image_patches"):
        patches = [int(image_processor.get_number_of_image_patches(im.height, im.width)) for im in images]
    else:
        grid = image_processor(images=list(images), return_tensors="pt")["image_grid_thw"]
        patches = [int(row[1]) * int(row[2]) for row in grid]
    return [p // (merge * merge) for p in patches]


def _prompt_tokens(processor: Any, messages: list[dict], images: Sequence[Image.Image], completion: str | None) -> int:
    """Exact sequence length the model will see: template tokens + image tokens (+ response)."""
    tok = processor.tokenizer
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    # each <|image_pad|> in the template text expands to that image's tokens
    n += sum(image_token_counts(processor, images)) - len(images)
    if completion is not None:
        n += len(tok(completion + "<|im_end|>\n", add_special_tokens=False)["input_ids"])
    return n


def model_limit(processor: Any) -> int | None:
    """The longest sequence the model takes, from its tokenizer's ``model_max_length`` (Qwen2.5-VL: 32,768 for
    the tiny model, 131,072 for the released 7B); None when the tokenizer leaves it unset (HF writes ~1e30)."""
    limit = getattr(getattr(processor, "tokenizer", processor), "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 10**9 else None


def build_examples(
    records: Sequence[PreferenceRecord],
    image_root: Path,
    spec: PromptSpec,
    *,
    kind: str,
    processor: Any = None,
    max_length: int | None = None,
    source: str = "",
    desc: str = "loading samples",
    ref_draw: RefDraw | None = None,
    seed: int = 0,
) -> list[dict]:
    """Rows for TRL: ``kind="sft"`` -> prompt, completion, images; ``kind="grpo"`` -> prompt, images and
    the reward columns (solution, prefer_attributes, non_prefer_attributes, reference_prompt_list,
    content_seed, prefered_images, non_prefered_images, image_root).

    A sample with an unreadable image is skipped and counted (the run goes on: one corrupt file must not
    cost a training run); if every sample is bad, that is an error. A sample longer than ``max_length``
    tokens is an error naming it: truncation would cut image tokens or the answer. ``max_length=None``
    means what the model can take (``model_limit``): an official-size sample (the ~2.2k-token official
    system prompt, 12 images, a 2,048-token response) passes; one beyond the model's context still raises.

    ``ref_draw`` (``data.refs_per_side``): each row's prompt shows a seeded subset of the record's references
    (``shown_record``); the target and the reward columns stay the record's own (the user's truth).
    """
    if processor is not None and max_length is None:
        max_length = model_limit(processor)
    rows: list[dict] = []
    bad: list[str] = []
    for i, rec in enumerate(tqdm(records, desc=desc, disable=len(records) < 200 or os.environ.get("RANK", "0") != "0")):
        where = f"{source} record {i}: "
        try:
            messages, images = sample_inputs(shown_record(rec, ref_draw, spec, seed), image_root, spec, where=where)
        except (ImageLoadError, SchemaError) as e:
            bad.append(str(e))
            continue
        if kind == "sft":
            if not rec.response:
                raise SchemaError(source, i, "conversations[1].value", "SFT needs a response (the CoT target)")
            row = {"prompt": messages, "completion": [assistant_message(rec.response)], "images": images}
        elif kind == "grpo":
            row = {
                "prompt": messages,
                "images": images,
                "solution": rec.label,
                "prefer_attributes": rec.prefer_attributes,
                "non_prefer_attributes": rec.non_prefer_attributes,
                "reference_prompt_list": rec.reference_prompt_list,
                "content_seed": content_seed(rec),
                # the image-similarity reward of reward=paper_real compares with the first reference image of
                # each side: the record's paths and the root they are relative to (resolved path-safely there)
                "prefered_images": list(rec.preferred),
                "non_prefered_images": list(rec.non_preferred),
                "image_root": str(image_root),
                # per-element truth where the data has it (synthetic records; None on PreferImg): reward element_scores
                "true_scores_a": rec.extra.get("true_scores_a"),
                "true_scores_b": rec.extra.get("true_scores_b"),
            }
        else:
            raise ValueError(f"kind must be 'sft' or 'grpo', got {kind!r}")
        if processor is not None and max_length is not None:
            n = _prompt_tokens(processor, messages, images, rec.response if kind == "sft" else None)
            if n > max_length:
                raise SchemaError(
                    source, i, None,
                    f"sample is {n} tokens, more than max_length={max_length}; raise max_length (null = the model's limit), lower the image "
                    f"bounds (model.max_pixels) or the reference count (prompt.max_refs) - it is never truncated",
                )
        rows.append(row)
    if bad:
        log.warning("skipped %d of %d samples with unreadable images; first: %s", len(bad), len(records), bad[0])
    if not rows:
        raise SchemaError(source, None, None, f"no usable sample ({len(bad)} had unreadable images; first: {bad[0] if bad else '-'})")
    return rows


ALIGN_PROMPT = "Describe the visual profile of this image."


def alignment_target(profile: dict, elements: Sequence[str] | None = None) -> str:
    """The target of an alignment row, worded like the teacher's candidate description ("Image A shows: ...");
    with ``elements``, only their terms, in that order ("This image shows: Fine.")."""
    from preferthinker.profile import terms_phrase

    body = ", ".join(profile[e] for e in elements) if elements else terms_phrase(profile)
    return f"This image shows: {body}."


def alignment_prompt(elements: Sequence[str] | None = None) -> str:
    """The instruction of an alignment row: ALIGN_PROMPT for all five elements, else one naming the asked ones."""
    return f"Describe the {' and '.join(elements)} of this image." if elements else ALIGN_PROMPT


def _system_messages(spec: PromptSpec) -> list[dict]:
    """The system message of an auxiliary row (alignment, check), as the CoT rows get it; [] without one."""
    sys_text = system_prompt(spec.system) if spec.system else None
    return [{"role": "system", "content": [{"type": "text", "text": sys_text}]}] if sys_text else []


def images_with_truth(rec: PreferenceRecord, rng: Any) -> list[tuple[str, dict]]:
    """The images of a record whose profile is known, as (relative path, profile): both candidates
    (``true_profile_a/b``), then one reference per side drawn with ``rng`` (``reference_profiles``). Synthetic
    records carry this truth; others give an empty list."""
    items: list[tuple[str, dict]] = []
    for rel, key in ((rec.image_a, "true_profile_a"), (rec.image_b, "true_profile_b")):
        if isinstance(rec.extra.get(key), dict):
            items.append((rel, rec.extra[key]))
    refs = rec.extra.get("reference_profiles") or {}
    for side, paths in (("preferred", rec.preferred), ("non_preferred", rec.non_preferred)):
        profs = refs.get(side) or []
        pairs = [(p, q) for p, q in zip(paths, profs, strict=False) if isinstance(q, dict)]
        items += rng.sample(pairs, min(len(pairs), 1)) if pairs else []
    return items


def build_alignment_examples(records: Sequence[PreferenceRecord], image_root: Path, spec: PromptSpec, *, per_record: int = 4,
                             seed: int = 0, elements: Sequence[str] | None = None) -> list[dict]:
    """Single-image "describe this image" rows: image -> its five terms ("This image shows: ..."), or with
    ``elements`` only theirs ("Describe the Detail of this image." -> "This image shows: Fine."): a
    one-element curriculum for a feature the five-term rows do not teach a from-scratch ViT (docs/results.md).

    A vision-alignment signal mixed into SFT (the role LLaVA's stage-1 captioning plays): the CoT target
    names each element only a few times per 12-image sample, which is too weak a signal for a vision tower
    trained from scratch (the tiny default otherwise learns the template and ignores the pixels). Needs
    per-image ground truth (synthetic records carry ``true_profile_a/b`` and ``reference_profiles``);
    records without it contribute nothing.
    """
    import random

    from preferthinker.profile import ELEMENTS

    unknown = [e for e in elements or () if e not in ELEMENTS]
    if unknown:
        raise ValueError(f"alignment elements {unknown} are not profile elements; choose from {list(ELEMENTS)}")
    instruction = alignment_prompt(elements)
    rng = random.Random(seed)
    rows: list[dict] = []
    for rec in records:
        for rel, prof in images_with_truth(rec, rng)[:per_record]:
            try:
                img = load_image(resolve_image(image_root, rel), spec.min_pixels, spec.max_pixels, what=rel)
            except (ImageLoadError, SchemaError):
                continue
            prompt = _system_messages(spec) + [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
            rows.append({"prompt": prompt, "completion": [assistant_message(alignment_target(prof, elements))], "images": [img]})
    return rows


READ_INSTRUCTION = "Read what Image A and Image B show, element by element."


def read_target(profile_a: dict, profile_b: dict) -> str:
    """The target of a candidate-reading row: per element, under the CoT's section heading, the two
    candidates' terms worded as a ``checks`` note opens ("2. Color:\nA shows Teal. B shows Ochre.")."""
    from preferthinker.profile import ELEMENTS, THINK_HEADINGS

    return "\n\n".join(f"{i + 1}. {heading}:\nA shows {profile_a[e]}. B shows {profile_b[e]}."
                        for i, (heading, e) in enumerate(zip(THINK_HEADINGS, ELEMENTS)))


def build_read_examples(records: Sequence[PreferenceRecord], image_root: Path, spec: PromptSpec, *, per_record: int = 1) -> list[dict]:
    """Candidate-reading rows: a record's whole prompt (its references and both candidates, in the official
    order) with the final instruction replaced by ``READ_INSTRUCTION``; the target names, under each element's
    heading, what Image A and Image B show (``read_target``). ``per_record=2`` adds the same row with the
    candidates swapped (images and target), so the reading cannot lean on which slot a term sits in.

    A retrieval drill: a single candidate is read well alone (the alignment rows) but, among the 12 images of
    a CoT prompt, the "A shows ..." of the notes must find Image A's four visual tokens. Measured on the tiny
    default (``docs/results.md``): the CoT stage learns that retrieval over epochs (Color read right in 54 % of
    notes after one CoT epoch, 99 % after three), and a reading row holds the same ten reads as a CoT row in
    about half its tokens (269 against 585); at equal CPU time they read Saturation and Medium worse than CoT
    epochs, so they are off by default. ``READ_INSTRUCTION`` is not in the tiny tokenizer's corpus (the default
    tokenizer stays the one measured): it is split into BPE pieces. Records without per-candidate truth
    (``true_profile_a/b``) contribute nothing.
    """
    if per_record not in (0, 1, 2):
        raise ValueError(f"per_record must be 0, 1 or 2 (as is, and swapped), got {per_record!r}")
    rows: list[dict] = []
    if per_record == 0:
        return rows
    for rec in records:
        pa, pb = rec.extra.get("true_profile_a"), rec.extra.get("true_profile_b")
        if not (isinstance(pa, dict) and isinstance(pb, dict)):
            continue
        try:
            targets = [read_target(pa, pb), read_target(pb, pa)]
            liked, disliked, a, b = load_record_images(rec, image_root, spec)
        except (KeyError, ImageLoadError, SchemaError):
            continue
        for (ia, ib), target in list(zip(((a, b), (b, a)), targets))[:per_record]:
            messages, images = build_messages(liked, disliked, ia, ib, style=spec.style, system=spec.system, max_refs=spec.max_refs,
                                              final_instruction=READ_INSTRUCTION, embed_images=False)
            rows.append({"prompt": messages, "completion": [assistant_message(target)], "images": images})
    return rows


CHECK_PROMPT = "Check one element of two candidates against the preference profiles."
_NOTE_REST = r"[^\n]*\nImage A\([^\n]*\nImage B\([^\n]*"  # a note line's remainder and its two score lines
_SECTION_NOTE = re.compile(rf"(?m)^(?:A shows|liked) {_NOTE_REST}")


def section_chunks(response: str) -> list[str]:
    """The per-element sections of a response that open with a note (``describe_candidates=checks`` or
    ``sections``): the note line and its two score lines, heading left out ("A shows Teal; liked ...\nImage
    A(5) - ...;\nImage B(3) - ...."). Responses without notes (the official files) have none."""
    return _SECTION_NOTE.findall(response or "")


CHECK_CANDIDATES = ("data", "uniform")
CHECK_CONTEXTS = ("none", "profile")


_HEADED_NOTE = re.compile(rf"(?m)^(?P<heading>\d+\. [^\n]*):\n(?P<body>A shows {_NOTE_REST})")


def check_context_text(response: str, heading: str) -> str:
    """The user text of a ``context="profile"`` check row: ``CHECK_PROMPT``, the response's two profile blocks
    (everything before ``<think>``) and the section's heading ("2. Color"), so the row's completion continues
    exactly as the CoT does after that heading."""
    head = (response or "").split("<think>", 1)[0].strip()
    return f"{CHECK_PROMPT}\n{head}\n{heading}:"


def build_check_examples(records: Sequence[PreferenceRecord], spec: PromptSpec, *, per_record: int = 5, seed: int = 0,
                         candidates: str = "data", context: str = "none") -> list[dict]:
    """Text-only "check one element" drill rows, ``per_record`` per record whose CoT response carries
    ``describe_candidates=checks`` notes; each completion is one element's section (note + two score lines).

    ``candidates="data"``: sections of the record's own response, in a seeded random choice (the data's candidate
    mix: 40 % preferred, 30 % non-preferred). ``"uniform"``: sections for the record's profiles and two candidate
    terms drawn uniformly from the element's terms (``teacher.check_drill_section``), so a profile term cannot be
    guessed from the candidate's. Measured on the tiny default (``docs/results.md``): "data" 61 % pairwise
    accuracy on SP_ID after the CoT SFT, "uniform" 54 %: its drill keeps the yes/no but weakens the candidate
    reading.

    A drill for the *matching* step. In a ``checks`` note each yes/no compares the profile term just written
    with the candidate term a few tokens back, and each score reads those yes/no words; a from-scratch tiny
    model learns that comparison from short rows at batch 32 in ~1,500 steps (a few CPU minutes), while inside
    whole 700-token responses at batch 8 it stays at the all-"no" prior for the whole CoT stage
    (``docs/results.md``). Records without checks notes (the official files) contribute nothing.

    ``context="none"``: the prompt is ``CHECK_PROMPT`` alone, so the liked/disliked terms of the note have nothing
    to be copied from and are learned as a guess. ``"profile"``: the prompt also holds the record's two profile
    blocks and the section's heading (``check_context_text``), so the note's terms are a copy of the element's
    profile lines, the step the CoT takes (and, with two liked terms per element, most often gets wrong). Measured
    on the tiny default's ``checks`` phase (``docs/results.md``, 2026-12-07): the SFT falls from 75.8 to 62.3 %
    average accuracy (MP notes miscopy 24-26 % against 31-35 %, but SP notes 15-17 % against 8-11 %, and Saturation
    and Detail scoring break), and the rows are 240 tokens against 165, so "none" stays the default.
    """
    import numpy as np

    from preferthinker.profile import ELEMENTS, THINK_HEADINGS, split_terms
    from preferthinker.data.synthetic.teacher import check_drill_section

    if candidates not in CHECK_CANDIDATES:
        raise ValueError(f"candidates must be one of {CHECK_CANDIDATES}, got {candidates!r}")
    if context not in CHECK_CONTEXTS:
        raise ValueError(f"context must be one of {CHECK_CONTEXTS}, got {context!r}")
    terms: dict[str, list[str]] = {e: [] for e in ELEMENTS}  # per element, the terms the uniform draw picks from
    if candidates == "uniform":
        for prof in (p for rec in records for p in _record_profiles(rec, references=False)):
            for e in ELEMENTS:
                for t in split_terms(str(prof.get(e) or "")):
                    if t not in terms[e]:
                        terms[e].append(t)
    rng = np.random.default_rng(seed)
    system = _system_messages(spec)

    def prompt(heading: str, response: str) -> list[dict]:
        text = CHECK_PROMPT if context == "none" else check_context_text(response, heading)
        return system + [{"role": "user", "content": [{"type": "text", "text": text}]}]

    rows: list[dict] = []
    for rec in records:
        chunks = [(m["heading"], m["body"]) for m in _HEADED_NOTE.finditer(rec.response or "")]
        if not chunks:
            continue
        if candidates == "data":
            picked = [chunks[int(i)] for i in rng.permutation(len(chunks))[:per_record]]
        else:
            order = [int(i) for i in rng.permutation(len(ELEMENTS))]
            picked = [(f"{i + 1}. {THINK_HEADINGS[i]}",
                       check_drill_section(ELEMENTS[i], split_terms(rec.prefer_attributes[ELEMENTS[i]]), rec.non_prefer_attributes[ELEMENTS[i]],
                                           terms[ELEMENTS[i]], rng))
                      for i in (order[k % len(order)] for k in range(per_record))]
        rows += [{"prompt": prompt(heading, rec.response), "completion": [assistant_message(body)], "images": []} for heading, body in picked]
    return rows


TOTAL_PROMPT = "Add up the scores of each image and answer which one the user prefers."


def build_total_examples(records: Sequence[PreferenceRecord], spec: PromptSpec) -> list[dict]:
    """Text-only "add up" drill rows, one per record whose CoT response has a ``Total:`` section after its
    per-element sections: the prompt holds those sections (the text between ``<think>`` and ``Total:``), the
    completion is the rest of the response (the two ``total_score=`` lines, ``</think>`` and the answer).

    A drill for the *total* step: with 112-pixel images the tiny default wrote per-element scores whose sum
    gives 78 % on SP_ID, but total lines that equal that sum in 5 of 200 responses (``docs/results.md``). The
    step needs no image, so short rows teach it at text-only cost. Records without a ``Total:`` section
    (answer-only targets) contribute nothing."""
    prompt_head = _system_messages(spec)
    rows: list[dict] = []
    for rec in records:
        resp = rec.response or ""
        start, cut = resp.find("<think>"), resp.find("Total:")
        if start < 0 or cut <= start:
            continue
        sections = resp[start + len("<think>"):cut].strip()
        if not sections:
            continue
        user = [{"role": "user", "content": [{"type": "text", "text": f"{TOTAL_PROMPT}\n{sections}"}]}]
        rows.append({"prompt": prompt_head + user, "completion": [assistant_message(resp[cut:])], "images": []})
    return rows


def _record_profiles(rec: PreferenceRecord, *, references: bool = True) -> list[dict]:
    """The profile dicts a record carries: both profiles, the candidates' per-image truth and (``references``)
    the references' per-image truth, in that order; missing ones left out."""
    profiles = [rec.prefer_attributes, rec.non_prefer_attributes, rec.extra.get("true_profile_a"), rec.extra.get("true_profile_b")]
    if references:
        refs = rec.extra.get("reference_profiles") or {}
        profiles += [p for side in ("preferred", "non_preferred") for p in (refs.get(side) or [])]
    return [p for p in profiles if isinstance(p, dict)]


def profile_terms(records: Sequence[PreferenceRecord]) -> list[str]:
    """Every profile term the records name (both profiles, split into single terms; per-image truth too),
    in first-seen order: the tiny tokenizer's whole-word tokens (``modeling.train_tokenizer``)."""
    from preferthinker.profile import split_terms

    seen: dict[str, None] = {}
    for prof in (p for rec in records for p in _record_profiles(rec)):
        for value in prof.values():
            for term in split_terms(str(value)):
                seen.setdefault(term, None)
    return list(seen)


def corpus_for_tokenizer(records: Sequence[PreferenceRecord], spec: PromptSpec) -> list[str]:
    """Texts the tiny model's tokenizer is trained on: the prompt texts and every response."""
    from preferthinker import prompting

    texts = [ALIGN_PROMPT, prompting.PREF_INTRO, prompting.NONPREF_INTRO, prompting.CANDIDATES_INTRO, prompting.FINAL_INSTRUCTION, "Image A", "Image B"]
    texts += list(prompting.COMPACT_TEXTS.values()) + [prompting.COMPACT_SYSTEM]
    sp = system_prompt(spec.system) if spec.system else None
    if sp:
        texts.append(sp)
    texts += [r.response for r in records if r.response]
    return texts
