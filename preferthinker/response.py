"""The predict-then-assess response contract: one parser, one renderer.

The official answer is exactly four tagged blocks, in order, separated only by whitespace::

    <visual preference profile>
    "Art Styles": "Pixel Art",
    ...
    </visual preference profile>

    <visual non-preference profile>
    ...
    </visual non-preference profile>

    <think>
    1. Artistic style:
    Image A(2) - <rationale>;
    Image B(5) - <rationale>.
    ... (five elements) ...
    Total:
    Image A: total_score=2+1+2+3+3=11
    Image B: total_score=5+5+4+4+4=22
    </think>

    <answer>Image B</answer>

``render_response`` writes it (SFT targets, the CoT teacher), ``parse_response`` reads it (rewards,
evaluation, the Assessor). Nothing else in the package may re-implement a regex for it.

``parse_response`` never raises: whatever it cannot read is reported as ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from preferthinker.profile import ELEMENTS, THINK_HEADINGS, canonical_key, parse_profile_string

PREF_TAG = "visual preference profile"
NONPREF_TAG = "visual non-preference profile"
THINK_TAG = "think"
ANSWER_TAG = "answer"
TAGS: tuple[str, ...] = (PREF_TAG, NONPREF_TAG, THINK_TAG, ANSWER_TAG)
ANSWERS: tuple[str, str] = ("Image A", "Image B")

# The official format check (training reward, re.fullmatch + DOTALL): the four blocks in order,
# only whitespace between them, nothing before or after (not even whitespace).
FORMAT_RE = re.compile(
    r"<visual preference profile>.*?</visual preference profile>\s*"
    r"<visual non-preference profile>.*?</visual non-preference profile>\s*"
    r"<think>.*?</think>\s*<answer>.*?</answer>",
    re.DOTALL,
)

MAX_SCORE = 5


@dataclass
class Assessment:
    """What one response says. Every field is None where the response does not say it readably."""

    preference: dict[str, str] | None = None  # 5 canonical keys -> term, or None if incomplete
    non_preference: dict[str, str] | None = None
    scores_a: list[int] | None = None  # 5 ints (0-5) in ELEMENTS order, or None if any is missing
    scores_b: list[int] | None = None
    rationales_a: list[str] | None = None
    rationales_b: list[str] | None = None
    total_a: int | None = None  # the number after the last "=" of the Total line
    total_b: int | None = None
    total_terms_a: list[int] | None = None  # the addends written on the Total line
    total_terms_b: list[int] | None = None
    answer: str | None = None  # "Image A" | "Image B" from the LAST <answer> block, else None
    answer_text: str | None = None  # raw inside of the last <answer> block
    format_ok: bool = False  # exactly the official format check
    tag_counts: dict[str, int] = field(default_factory=dict)  # opening-tag count per block
    preference_text: str | None = None  # raw inside of the last preference block
    non_preference_text: str | None = None
    raw: str = ""

    @property
    def single_blocks(self) -> bool:
        """True when each of the four blocks occurs exactly once (stricter than ``format_ok``)."""
        return all(self.tag_counts.get(t, 0) == 1 for t in TAGS)

    @property
    def consistent(self) -> bool:
        """Answer agrees with the totals, and the totals with the per-element scores."""
        if None in (self.scores_a, self.scores_b, self.total_a, self.total_b, self.answer):
            return False
        if sum(self.scores_a) != self.total_a or sum(self.scores_b) != self.total_b:
            return False
        if self.total_terms_a is not None and self.total_terms_a != self.scores_a:
            return False
        if self.total_terms_b is not None and self.total_terms_b != self.scores_b:
            return False
        if self.total_a == self.total_b:
            return False
        return self.answer == ("Image A" if self.total_a > self.total_b else "Image B")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["single_blocks"] = self.single_blocks
        out["consistent"] = self.consistent
        return out


# ----------------------------------------------------------------------------------------------
# parsing


def _last_block(text: str, tag: str) -> str | None:
    matches = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, re.DOTALL)
    return matches[-1] if matches else None


_QUOTED_PAIR = re.compile(r'"\s*([^"\n]{1,40}?)\s*"\s*:\s*"([^"\n]*)"')
_LINE_PAIR = re.compile(r"^\s*\"?([A-Za-z][A-Za-z ]{0,40}?)\"?\s*:\s*(.*?)\s*,?\s*$")


def parse_profile_block(block: str | None) -> dict[str, str] | None:
    """Read the 5 elements from the inside of a profile block; None unless all five are there."""
    if not block:
        return None
    found: dict[str, str] = {}
    for key, value in _QUOTED_PAIR.findall(block):
        canon = canonical_key(key)
        if canon and canon not in found and value.strip():
            found[canon] = value.strip()
    if len(found) < len(ELEMENTS):  # unquoted forms: one "Key: term" per line, else a flat string
        for line in block.splitlines():
            m = _LINE_PAIR.match(line)
            if m:
                canon = canonical_key(m.group(1))
                value = m.group(2).strip().strip('"').strip()
                if canon and canon not in found and value:
                    found[canon] = value
    if len(found) < len(ELEMENTS):
        for canon, value in parse_profile_string(" ".join(block.split())).items():
            value = value.strip().strip('"').strip()
            if canon not in found and value:
                found[canon] = value
    if any(e not in found for e in ELEMENTS):
        return None
    return {e: found[e] for e in ELEMENTS}


# "1. Artistic style:" (number optional on the model's side, heading decides the element)
_SECTION_HEAD = re.compile(r"^[ \t]*(?:(\d)\s*[.)]\s*)?([A-Za-z][A-Za-z ]{1,30}?)\s*:[ \t]*$", re.MULTILINE)
_SCORE = r"[(\[]\s*(\d{1,2})\s*[)\]]"
_IMG_A = re.compile(rf"Image\s*A\s*{_SCORE}\s*[-–—:]?\s*", re.IGNORECASE)
_IMG_B = re.compile(rf"Image\s*B\s*{_SCORE}\s*[-–—:]?\s*", re.IGNORECASE)
_TOTAL = re.compile(r"Image\s*([AB])\s*:\s*total_score\s*=\s*([\d\s+]*?)\s*=\s*(\d{1,3})", re.IGNORECASE)


def _strip_one(text: str, chars: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text and text[-1] in chars else text


def _parse_think(think: str) -> tuple[dict, dict]:
    """Return ({element: (score_a, rationale_a, score_b, rationale_b)}, totals) from a <think> body."""
    total_at = re.search(r"^\s*Total\s*:", think, re.MULTILINE | re.IGNORECASE)
    body = think[: total_at.start()] if total_at else think
    heads = [m for m in _SECTION_HEAD.finditer(body)]
    sections: dict[str, tuple] = {}
    for i, head in enumerate(heads):
        element = canonical_key(head.group(2))
        if element is None and head.group(1) and 1 <= int(head.group(1)) <= len(ELEMENTS):
            element = ELEMENTS[int(head.group(1)) - 1]
        if element is None or element in sections:
            continue
        end = heads[i + 1].start() if i + 1 < len(heads) else len(body)
        chunk = body[head.end() : end]
        ma, mb = _IMG_A.search(chunk), _IMG_B.search(chunk)
        if not ma or not mb or mb.start() < ma.end():
            continue
        rat_a = _strip_one(chunk[ma.end() : mb.start()], ";,.")
        rat_b = _strip_one(chunk[mb.end() :], ".;")
        sections[element] = (int(ma.group(1)), rat_a, int(mb.group(1)), rat_b)
    totals: dict[str, tuple[int, list[int] | None]] = {}
    tail = think[total_at.start() :] if total_at else ""
    for side, terms, value in _TOTAL.findall(tail):
        nums = [int(t) for t in re.findall(r"\d+", terms)]
        totals[side.upper()] = (int(value), nums or None)
    return sections, totals


def _normalise_answer(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = " ".join(text.split()).strip().rstrip(".").strip().lower()
    for ans in ANSWERS:
        if cleaned == ans.lower():
            return ans
    return None


def parse_response(text: str) -> Assessment:
    """Parse a model response into an ``Assessment``. Never raises; missing parts are None.

    >>> a = parse_response(render_response(
    ...     {"Art Styles": "Pixel Art", "Color": "Pink", "Artistic Medium": "Silkscreen",
    ...      "Saturation": "Muted", "Detail": "Fine"},
    ...     {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Watercolor",
    ...      "Saturation": "Intense", "Detail": "Smooth"},
    ...     [5, 4, 3, 3, 4], [1, 2, 3, 3, 2]))
    >>> a.format_ok, a.total_a, a.total_b, a.answer
    (True, 19, 11, 'Image A')
    """
    if not isinstance(text, str):
        try:
            text = "" if text is None else str(text)
        except Exception:  # an object whose __str__ fails is simply unreadable
            text = ""
    out = Assessment(raw=text)
    try:
        out.format_ok = FORMAT_RE.fullmatch(text) is not None
        out.tag_counts = {t: text.count(f"<{t}>") for t in TAGS}
        out.preference_text = _last_block(text, PREF_TAG)
        out.non_preference_text = _last_block(text, NONPREF_TAG)
        out.preference = parse_profile_block(out.preference_text)
        out.non_preference = parse_profile_block(out.non_preference_text)
        out.answer_text = _last_block(text, ANSWER_TAG)
        out.answer = _normalise_answer(out.answer_text)
        think = _last_block(text, THINK_TAG)
        if think is not None:
            sections, totals = _parse_think(think)
            if all(e in sections for e in ELEMENTS):
                sa = [sections[e][0] for e in ELEMENTS]
                sb = [sections[e][2] for e in ELEMENTS]
                if all(0 <= s <= MAX_SCORE for s in sa + sb):
                    out.scores_a, out.scores_b = sa, sb
                    out.rationales_a = [sections[e][1] for e in ELEMENTS]
                    out.rationales_b = [sections[e][3] for e in ELEMENTS]
            if "A" in totals:
                out.total_a, out.total_terms_a = totals["A"]
            if "B" in totals:
                out.total_b, out.total_terms_b = totals["B"]
    except Exception:  # pragma: no cover - defensive: the contract is "never raises"
        return Assessment(raw=text, format_ok=out.format_ok)
    return out


# ----------------------------------------------------------------------------------------------
# rendering


def render_profile_block(tag: str, profile: Mapping[str, str]) -> str:
    """One profile block (``tag`` = PREF_TAG or NONPREF_TAG): the five elements as ``"Key": "term"`` lines."""
    prof = {canonical_key(k) or k: v for k, v in profile.items()}
    missing = [e for e in ELEMENTS if e not in prof]
    if missing:
        raise ValueError(f"profile lacks element(s) {missing}")
    lines = ",\n".join(f'"{e}": "{prof[e]}"' for e in ELEMENTS)
    return f"<{tag}>\n{lines}\n</{tag}>"


def _check_scores(name: str, scores: Sequence[int]) -> list[int]:
    scores = [int(s) for s in scores]
    if len(scores) != len(ELEMENTS) or not all(0 <= s <= MAX_SCORE for s in scores):
        raise ValueError(f"{name} must be {len(ELEMENTS)} integers in 0..{MAX_SCORE}, got {scores}")
    return scores


def _check_rationale(name: str, text: str) -> str:
    text = " ".join(str(text).split())
    if re.search(r"Image\s*[AB]\s*[(\[]", text, re.IGNORECASE) or any(f"<{t}" in text or f"</{t}" in text for t in TAGS):
        raise ValueError(f"{name} must not contain score markers or response tags: {text!r}")
    return text


def render_section_body(score_a: int, score_b: int, rationale_a: str = "", rationale_b: str = "", note: str = "") -> str:
    """One element's section of ``<think>`` below its heading: the optional note line, then "Image A(5) - ...;"
    and "Image B(3) - ..."."""
    line_a = f"Image A({score_a})" + (f" - {rationale_a};" if rationale_a else ";")
    line_b = f"Image B({score_b})" + (f" - {rationale_b}." if rationale_b else ".")
    return (f"{note}\n" if note else "") + f"{line_a}\n{line_b}"


def render_response(
    preference: Mapping[str, str],
    non_preference: Mapping[str, str],
    scores_a: Sequence[int],
    scores_b: Sequence[int],
    rationales_a: Sequence[str] | None = None,
    rationales_b: Sequence[str] | None = None,
    answer: str | None = None,
    think_preamble: str | None = None,
    section_notes: Sequence[str] | None = None,
) -> str:
    """Write the official four-block response. ``answer`` defaults to the image with the larger
    total; a tie needs an explicit answer (ValueError otherwise, since the contract has none).
    ``think_preamble`` (free lines, e.g. what each candidate shows) opens ``<think>`` before the
    per-element sections; the parser skips it. ``section_notes`` (one line per element, e.g. what each
    candidate shows for it) goes between a section's heading and its "Image A(..)" line; the parser skips
    those too."""
    sa, sb = _check_scores("scores_a", scores_a), _check_scores("scores_b", scores_b)
    ra = [_check_rationale("rationales_a", r) for r in (rationales_a or [""] * len(ELEMENTS))]
    rb = [_check_rationale("rationales_b", r) for r in (rationales_b or [""] * len(ELEMENTS))]
    if len(ra) != len(ELEMENTS) or len(rb) != len(ELEMENTS):
        raise ValueError(f"need {len(ELEMENTS)} rationales per image")
    ta, tb = sum(sa), sum(sb)
    if answer is None:
        if ta == tb:
            raise ValueError(f"totals tie ({ta}); pass answer= explicitly")
        answer = "Image A" if ta > tb else "Image B"
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")

    notes = [_check_rationale("section_notes", n) for n in (section_notes or [""] * len(ELEMENTS))]
    if len(notes) != len(ELEMENTS):
        raise ValueError(f"need {len(ELEMENTS)} section notes, one per element")
    if any(re.search(r":\s*$", n) for n in notes):
        raise ValueError("section_notes must not end with ':' (they would read as a section heading)")
    sections = [f"{i + 1}. {heading}:\n{render_section_body(sa[i], sb[i], ra[i], rb[i], notes[i])}" for i, heading in enumerate(THINK_HEADINGS)]
    think = "\n\n".join(sections)
    if think_preamble:
        lines = [_check_rationale("think_preamble", line) for line in str(think_preamble).splitlines() if line.strip()]
        if any(re.fullmatch(r"(?:\d\s*[.)]\s*)?[A-Za-z][A-Za-z ]{1,30}?\s*:", ln) for ln in lines):
            raise ValueError("think_preamble lines must not look like section headings ('Name:')")
        think = "\n".join(lines) + "\n\n" + think
    think += (
        f"\n\nTotal:\nImage A: total_score={'+'.join(map(str, sa))}={ta}"
        f"\nImage B: total_score={'+'.join(map(str, sb))}={tb}"
    )
    return (
        f"{render_profile_block(PREF_TAG, preference)}\n\n"
        f"{render_profile_block(NONPREF_TAG, non_preference)}\n\n"
        f"<{THINK_TAG}>\n{think}\n</{THINK_TAG}>\n\n"
        f"<{ANSWER_TAG}>{answer}</{ANSWER_TAG}>"
    )
