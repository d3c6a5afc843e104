"""The common visual preference profile: five elements shared by every user.

One place for the element names, their order and the spellings found in the wild
(the official training prompt writes ``"ArtisticMedium"``; the user prompt says "artistic style").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Canonical keys, in the order the official reward code stringifies them (key_order).
ELEMENTS: tuple[str, ...] = ("Art Styles", "Color", "Artistic Medium", "Saturation", "Detail")

# Heading used inside <think> for each element ("1. Artistic style:"), official wording.
THINK_HEADINGS: tuple[str, ...] = ("Artistic style", "Color", "Artistic Medium", "Saturation", "Detail")


def _norm(key: str) -> str:
    return re.sub(r"[^a-z]", "", key.lower())


# Every accepted spelling, normalised (lower-case, letters only) -> canonical key.
_ALIASES: dict[str, str] = {}
for _canon, _variants in {
    "Art Styles": ["Art Styles", "Art Style", "ArtStyle", "ArtStyles", "Artistic Style", "Artistic Styles", "Style", "Styles"],
    "Color": ["Color", "Colour", "Colors", "Colours"],
    "Artistic Medium": ["Artistic Medium", "ArtisticMedium", "Art Medium", "Medium", "Artistic Media", "Media"],
    "Saturation": ["Saturation"],
    "Detail": ["Detail", "Details", "Detail Level", "Level of Detail"],
}.items():
    for _v in _variants:
        _ALIASES[_norm(_v)] = _canon


def canonical_key(key: str) -> str | None:
    """Map any accepted spelling of an element name to its canonical key, else None.

    >>> canonical_key("ArtisticMedium"), canonical_key(" colour "), canonical_key("mood")
    ('Artistic Medium', 'Color', None)
    """
    return _ALIASES.get(_norm(key))


def canonicalize_profile(profile: Mapping[str, str] | str) -> dict[str, str]:
    """Return ``{canonical key: term}`` for a dict with any key spelling or a "Key: term, ..." string.

    Unknown keys are dropped; raises ValueError when an element is missing, so callers that
    load ground truth fail loudly instead of training on a partial profile.
    """
    if isinstance(profile, str):
        profile = parse_profile_string(profile)
    out: dict[str, str] = {}
    for key, value in profile.items():
        canon = canonical_key(str(key))
        if canon is not None and canon not in out:
            out[canon] = str(value).strip()
    missing = [e for e in ELEMENTS if e not in out]
    if missing:
        raise ValueError(f"profile lacks element(s) {missing}; got keys {list(profile)}")
    return {e: out[e] for e in ELEMENTS}


# "<any alias>:" as a whole word, spaces inside the alias optional ("Artistic  Medium", "ArtisticMedium").
_KEY_RE = re.compile(
    r"(?<![A-Za-z])("
    + "|".join(
        sorted(
            {r"\s*".join(re.escape(w) for w in v.split()) for vs in [
                ["Art Styles", "Art Style", "Artistic Style", "Artistic Styles", "Styles", "Style"],
                ["Color", "Colour", "Colors", "Colours"],
                ["Artistic Medium", "Art Medium", "Artistic Media", "Medium", "Media"],
                ["Saturation"],
                ["Detail Level", "Level of Detail", "Details", "Detail"],
            ] for v in vs},
            key=len,
            reverse=True,
        )
    )
    + r")\s*\"?\s*:",
    re.IGNORECASE,
)


def parse_profile_string(text: str) -> dict[str, str]:
    """Parse ``"Art Styles: X, Color: Y, ..."`` (the official GT string form) into a dict.

    Values may themselves contain commas ("Pixel Art, Watercolor") for multi-preference
    users, so we split on the *known keys*, not on commas.
    """
    hits = [(m.start(), m.end(), canonical_key(m.group(1))) for m in _KEY_RE.finditer(text)]
    out: dict[str, str] = {}
    for i, (_, end, canon) in enumerate(hits):
        stop = hits[i + 1][0] if i + 1 < len(hits) else len(text)
        value = text[end:stop].strip().strip(",").strip().strip('"').strip()
        if canon not in out:
            out[canon] = value
    return out


def profile_to_string(profile: Mapping[str, str]) -> str:
    """The official ground-truth string form: ``"Art Styles: X, Color: Y, ..."`` in ELEMENTS order."""
    prof = canonicalize_profile(profile)
    return ", ".join(f"{k}: {prof[k]}" for k in ELEMENTS)


def terms_phrase(profile: Mapping[str, str], tags: Sequence[str] | None = None) -> str:
    """The five terms in ELEMENTS order, comma-joined, each optionally followed by ``(tag)``: the body of the
    teacher's "Image A shows: ..." line and of the alignment rows' "This image shows: ..." target."""
    if tags is None:
        return ", ".join(profile[e] for e in ELEMENTS)
    return ", ".join(f"{profile[e]} ({t})" for e, t in zip(ELEMENTS, tags, strict=True))


def split_terms(value: str) -> list[str]:
    """Split a multi-term profile value ("Pixel Art, Watercolor" or "Pixel Art / Watercolor")."""
    return [t.strip() for t in re.split(r"\s*(?:,|/|\band\b|;)\s*", value) if t.strip()]
