"""Load and check the one vocabulary file (``vocabulary.yaml`` beside this module)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from preferthinker.profile import ELEMENTS, split_terms

VOCAB_PATH = Path(__file__).with_name("vocabulary.yaml")
MIN_TERMS = 6

# renderer key each element's terms must carry
_REQUIRED = {
    "Art Styles": ("geometry",),
    "Color": ("hue",),
    "Artistic Medium": ("technique",),
    "Saturation": ("saturation",),
    "Detail": ("texture", "amplitude", "coverage"),
}
GEOMETRIES = ("facets", "curves", "outlined", "minimal", "grid", "sunburst")
TECHNIQUES = ("mosaic", "halftone", "watercolor", "pencil", "flat", "woodcut")
TEXTURES = ("none", "soft", "grain", "crosshatch", "speckle")


class VocabularyError(ValueError):
    """The vocabulary file breaks one of its rules (the message says which)."""


@dataclass(frozen=True)
class Term:
    element: str
    index: int
    name: str
    params: dict[str, Any] = field(hash=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


@dataclass(frozen=True)
class Vocabulary:
    elements: dict[str, dict[str, Any]] = field(hash=False)  # element -> {"kind":..., options...}
    terms: dict[str, tuple[Term, ...]] = field(hash=False)  # element -> terms in file order
    source: str = ""  # the YAML text, for the snapshot written beside the data

    def names(self, element: str) -> list[str]:
        return [t.name for t in self.terms[element]]

    def size(self, element: str) -> int:
        return len(self.terms[element])

    def term(self, element: str, name_or_index: str | int) -> Term:
        if isinstance(name_or_index, (int,)) and not isinstance(name_or_index, bool):
            return self.terms[element][name_or_index]
        key = _norm(str(name_or_index))
        for t in self.terms[element]:
            if _norm(t.name) == key:
                return t
        raise KeyError(f"{name_or_index!r} is not a {element} term; known: {self.names(element)}")

    def index(self, element: str, name: str) -> int:
        return self.term(element, name).index

    def option(self, element: str, key: str, default: Any = None) -> Any:
        return self.elements[element].get(key, default)


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def parse_vocabulary(text: str) -> Vocabulary:
    """Parse and validate vocabulary YAML text."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("elements"), dict):
        raise VocabularyError("the vocabulary needs a top-level 'elements' mapping")
    els = data["elements"]
    if list(els) != list(ELEMENTS):
        raise VocabularyError(f"elements must be exactly {list(ELEMENTS)} in that order, got {list(els)}")
    elements: dict[str, dict[str, Any]] = {}
    terms: dict[str, tuple[Term, ...]] = {}
    for element in ELEMENTS:
        spec = els[element]
        raw_terms = spec.get("terms") if isinstance(spec, dict) else None
        if not isinstance(raw_terms, list) or len(raw_terms) < MIN_TERMS:
            raise VocabularyError(f"{element}: needs a list of at least {MIN_TERMS} terms")
        seen: set[str] = set()
        out = []
        for i, raw in enumerate(raw_terms):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise VocabularyError(f"{element} term {i}: needs a 'name'")
            name = raw["name"].strip()
            if split_terms(name) != [name] or re.search(r"[\"\n]", name):
                raise VocabularyError(f"{element} term {name!r}: names may not contain ',', '/', ';', '\"' or the word 'and'")
            if _norm(name) in seen:
                raise VocabularyError(f"{element}: duplicate term {name!r}")
            seen.add(_norm(name))
            missing = [k for k in _REQUIRED[element] if k not in raw]
            if missing:
                raise VocabularyError(f"{element} term {name!r}: missing renderer key(s) {missing}")
            params = {k: v for k, v in raw.items() if k != "name"}
            out.append(Term(element, i, name, params))
        for t in out:
            for key, allowed in (("geometry", GEOMETRIES), ("technique", TECHNIQUES), ("texture", TEXTURES)):
                if key in t.params and t.params[key] not in allowed:
                    raise VocabularyError(f"{element} term {t.name!r}: {key}={t.params[key]!r}, expected one of {allowed}")
        terms[element] = tuple(out)
        elements[element] = {k: v for k, v in spec.items() if k != "terms"}
    return Vocabulary(elements=elements, terms=terms, source=text)


@lru_cache(maxsize=8)
def load_vocabulary(path: str | None = None) -> Vocabulary:
    """The vocabulary at ``path`` (default: the packaged ``vocabulary.yaml``), cached."""
    p = Path(path) if path else VOCAB_PATH
    if not p.is_file():
        raise VocabularyError(f"vocabulary file not found: {p}")
    return parse_vocabulary(p.read_text(encoding="utf-8"))
