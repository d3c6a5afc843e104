"""The CoT teacher (stand-in for the paper's Claude annotator).

From a user's ground truth it writes the full predict-then-assess response through
``preferthinker.response.render_response``: both profiles, per-element scores of Image A and Image B
(the data's own rule), a one-line rationale per score that cites what is *measured* in the candidate's
pixels (``features.measure``: dominant hue, saturation, grain level, tile/dot grid strength, edge
sharpness, outline ink, symmetry, ...), the totals and the answer.

``verbosity`` sets the rationale length: ``terse`` (term and relation only: what a tiny model can
learn), ``normal`` (one clause with one measurement) or ``rich`` (a sentence with the measurement and
a comparison with both profiles). Wording varies from sample to sample (seeded).

``passes_filter`` is the paper's filter: a response is kept only when it parses, is internally
consistent (per-element scores sum to the totals, the answer follows the totals) and answers the label
with the user's profiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from preferthinker.profile import ELEMENTS, canonicalize_profile, terms_phrase
from preferthinker.response import parse_response, render_response
from preferthinker.data.synthetic.vocabulary import Vocabulary, load_vocabulary

VERBOSITIES = ("terse", "normal", "rich")

_REL_TERSE = {5: "preferred", 1: "non-preferred", 3: "neutral"}

_REL = {
    5: ["matches the preferred {pref}", "fits the liked {pref}", "agrees with the preferred {pref}", "is the favoured {pref}"],
    1: ["matches the disliked {non}", "is the non-preferred {non}", "falls on the disliked {non}", "repeats the avoided {non}"],
    3: ["is neither {pref} nor {non}", "sits between the liked {pref} and the disliked {non}", "is unrelated to {pref} and {non}", "is a neutral choice, neither {pref} nor {non}"],
}

_RICH_TAIL = {
    5: ["which the user's liked references share", "in line with the preference profile", "so it scores high"],
    1: ["which the disliked references show", "against the preference profile", "so it scores low"],
    3: ["so it earns a middle score", "neither helping nor hurting", "a neutral match"],
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def describe_measurement(element: str, term: str, m: Mapping[str, float], vocab: Vocabulary) -> str:
    """A short phrase naming what is measurable in the image for ``element`` (ground-truth ``term``)."""
    t = vocab.term(element, term)
    if element == "Color":
        return f"dominant hue {m['hue']:.0f} degrees"
    if element == "Saturation":
        return f"median saturation {m['saturation']:.2f}"
    if element == "Detail":
        level = 100 * m["texture_energy"]
        if t["texture"] == "crosshatch":
            return f"a crosshatch texture (grain {level:.1f}, hatch {m['texture_hatch']:.2f})"
        if t["coverage"] == "shapes":
            return f"grain only inside the shapes ({_pct(m['texture_smooth_share'])} smooth ground)"
        return f"grain level {level:.1f}"
    if element == "Artistic Medium":
        tech = t["technique"]
        if tech == "mosaic":
            return f"a tile grid (grid score {m['tile_grid']:.1f})"
        if tech == "halftone":
            return f"a dot screen (dot score {m['dot_grid']:.1f})"
        if tech == "watercolor":
            return f"soft washed edges (sharpness {m['edge_sharpness']:.2f})"
        if tech == "pencil":
            return f"thin contour lines over pale fills (tone spread {m['fill_spread']:.2f})"
        if tech == "woodcut":
            return f"two-tone ink blocks ({_pct(m['dark_share'])} ink)"
        return f"crisp flat fills (sharpness {m['edge_sharpness']:.2f})"
    geo = t["geometry"]
    if geo == "facets":
        return f"fragmented straight-edged facets (edge density {m['edge_density']:.2f})"
    if geo == "curves":
        return f"flowing curved forms (straightness {m['straightness']:.2f})"
    if geo == "outlined":
        return f"bold black outlines ({_pct(m['outline_share'])} outline ink)"
    if geo == "minimal":
        return f"a mostly empty ground ({_pct(m['empty_share'])} empty)"
    if geo == "grid":
        return f"axis-aligned blocks (alignment {m['axis_alignment']:.2f})"
    return f"a mirror-symmetric sunburst (symmetry {m['mirror_symmetry']:.2f})"


def rationale(element: str, term: str, score: int, preferred: Sequence[str], non_preferred: str, m: Mapping[str, float] | None, verbosity: str, rng: np.random.Generator, vocab: Vocabulary | None) -> str:
    """One line, no response tags, no "Image X(" markers."""
    if verbosity == "terse":
        return f"{term}, {_REL_TERSE[score]}"
    pref = " or ".join(preferred)
    rel = _REL[score][int(rng.integers(len(_REL[score])))].format(pref=pref, non=non_preferred)
    what = describe_measurement(element, term, m, vocab) if m is not None else term
    if verbosity == "normal":
        return f"{what}, {term}, {rel}"
    tail = _RICH_TAIL[score][int(rng.integers(len(_RICH_TAIL[score])))]
    openers = ["The image shows", "Measured:", "It has", "We see"]
    return f"{openers[int(rng.integers(len(openers)))]} {what}, which reads as {term}; it {rel}, {tail}"


DESCRIBE_MODES = ("terms", "relations", "sections", "checks", "none")


def describe_mode(value: bool | str | None) -> str:
    """Normalise ``describe_candidates``: true/"terms", "relations", "sections", "checks", false/None/"none" (ValueError
    otherwise)."""
    if value is True or value == "terms":
        return "terms"
    if value is False or value is None or value == "none":
        return "none"
    if value in ("relations", "sections", "checks"):
        return value
    raise ValueError(f"describe_candidates must be true/terms, relations, sections, checks or false/none, got {value!r}")


def check_note(side: str, term: str, preferred: Sequence[str], non_preferred: str) -> str:
    """One candidate's half of a ``checks`` note: its term, then each profile term with yes/no for "is it
    the candidate's term" ("A shows Teal; liked Teal yes, Ochre no; disliked Violet no.")."""
    liked = ", ".join(f"{p} {'yes' if p == term else 'no'}" for p in preferred)
    return f"{side} shows {term}; liked {liked}; disliked {non_preferred} {'yes' if non_preferred == term else 'no'}."


def checks_note(term_a: str, term_b: str, preferred: Sequence[str], non_preferred: str) -> str:
    """A whole ``checks`` note: Image A's half, then Image B's (``check_note``)."""
    return check_note("A", term_a, preferred, non_preferred) + " " + check_note("B", term_b, preferred, non_preferred)


def teach(
    preference: Mapping[str, str],
    non_preference: Mapping[str, str],
    profile_a: Mapping[str, str],
    profile_b: Mapping[str, str],
    scores_a: Sequence[int],
    scores_b: Sequence[int],
    measures_a: Mapping[str, float] | None,
    measures_b: Mapping[str, float] | None,
    *,
    verbosity: str = "terse",
    rng: np.random.Generator | None = None,
    vocab: Vocabulary | None = None,
    describe_candidates: bool | str = True,
) -> str:
    """Write the full response for one sample. ``preference`` values may hold two terms ("X, Y").

    ``describe_candidates`` opens ``<think>`` with what each candidate shows ("Image A shows: Art Deco,
    Teal, ...") before the per-element scores. The contract puts each score before its rationale, so
    without it the model must recognise a candidate's term and compare it with the profile in one token;
    describing first turns scoring into matching terms already written (the tiny default needs this).
    ``describe_candidates="sections"`` writes no preamble but opens each element's section with a note naming
    the liked and disliked terms and what the two candidates show for that element ("liked Teal; disliked
    Violet; A shows Teal; B shows Ochre."): each score then compares terms a few tokens back.
    ``describe_candidates="checks"`` (the tiny default) opens each section with a checklist per candidate: its
    term, then every profile term followed by yes/no ("A shows Teal; liked Teal yes; disliked Violet no. B shows
    Ochre; liked Teal no; disliked Violet no."). Each yes/no compares the profile term just written with the
    candidate term a fixed few tokens back, which a tiny model learns in a few hundred steps, and each score then
    reads yes/no words of its own half; ``sections`` asks for the comparison at the score itself, several terms
    back, and a tiny model from scratch needs thousands of steps for it (``docs/benchmarks.md``).
    ``describe_candidates="relations"`` also tags each described term with its relation to the profiles
    ("Teal (neutral)"): the relation is decided right after the term is written, by matching it against the
    profile blocks, and each score then copies a word already written.
    """
    if verbosity not in VERBOSITIES:
        raise ValueError(f"verbosity must be one of {VERBOSITIES}, got {verbosity!r}")
    vocab = vocab or load_vocabulary()
    rng = rng or np.random.default_rng(0)
    from preferthinker.profile import split_terms

    ra, rb = [], []
    for i, e in enumerate(ELEMENTS):
        prefs = split_terms(preference[e])
        ra.append(rationale(e, profile_a[e], int(scores_a[i]), prefs, non_preference[e], measures_a, verbosity, rng, vocab))
        rb.append(rationale(e, profile_b[e], int(scores_b[i]), prefs, non_preference[e], measures_b, verbosity, rng, vocab))
    mode = describe_mode(describe_candidates)
    preamble = notes = None
    if mode == "sections":
        notes = [f"liked {preference[e]}; disliked {non_preference[e]}; A shows {profile_a[e]}; B shows {profile_b[e]}." for e in ELEMENTS]
    elif mode == "checks":
        notes = [checks_note(profile_a[e], profile_b[e], split_terms(preference[e]), non_preference[e]) for e in ELEMENTS]
    elif mode != "none":
        preamble = "\n".join(
            f"Image {side} shows: {terms_phrase(prof, [_REL_TERSE[int(x)] for x in sc] if mode == 'relations' else None)}."
            for side, prof, sc in (("A", profile_a, scores_a), ("B", profile_b, scores_b)))
    return render_response(dict(preference), dict(non_preference), list(scores_a), list(scores_b), ra, rb, think_preamble=preamble,
                           section_notes=notes)


def check_drill_section(element: str, preferred: Sequence[str], non_preferred: str, terms: Sequence[str], rng: np.random.Generator) -> str:
    """One ``checks`` section body (note + two terse score lines) for a drill row, with both candidates' terms
    drawn uniformly from ``terms`` (the element's vocabulary), independent of the profile.

    In the CoT data a candidate shows a preferred term 40 % of the time, so in a row without images the best
    guess for "A shows Teal; liked ..." is Teal itself: drilling on those sections taught the tiny model to write
    the candidate's term as the liked one ("liked Minimalism yes; disliked Minimalism yes"). Uniform candidates
    leave no such shortcut: the profile terms can only be guessed, and the yes/no only computed."""
    from preferthinker.response import render_section_body
    from preferthinker.data.synthetic.users import score_element

    ta, tb = (str(terms[int(i)]) for i in rng.integers(len(terms), size=2))
    sa, sb = score_element(ta, preferred, non_preferred), score_element(tb, preferred, non_preferred)
    note = checks_note(ta, tb, preferred, non_preferred)
    ra, rb = (rationale(element, t, sc, preferred, non_preferred, None, "terse", rng, None) for t, sc in ((ta, sa), (tb, sb)))
    return render_section_body(sa, sb, ra, rb, note)


def passes_filter(response: str, label: str, preference: Mapping[str, str], non_preference: Mapping[str, str]) -> bool:
    """The paper's filter: drop a sample whose reasoning contradicts its answer (or is unreadable)."""
    a = parse_response(response)
    if not (a.format_ok and a.consistent and a.answer == label):
        return False
    try:
        return a.preference == canonicalize_profile(preference) and a.non_preference == canonicalize_profile(non_preference)
    except ValueError:
        return False
