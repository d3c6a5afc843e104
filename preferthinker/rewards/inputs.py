"""What every reward reads: the completion text, the dataset columns TRL passes, and where sub-scores go.

TRL calls a reward as ``fn(completions, **columns)`` with one value per completion in every column.
The helpers here turn those values into checked Python objects (a label, a canonical gold profile, the
first reference of a list) and raise ``ValueError`` naming the column and row when the data is broken:
a broken dataset is a bug to fix, not a low score.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from preferthinker.profile import canonicalize_profile
from preferthinker.response import ANSWERS, NONPREF_TAG, PREF_TAG, TAGS, Assessment, parse_response

# Gold-profile column and reference-image column(s) per side (the official schema spells it "prefered").
SIDES: dict[str, dict[str, Any]] = {
    "pref": {"tag": PREF_TAG, "gold": "prefer_attributes", "refs": ("prefered_images", "preferred_images")},
    "nonpref": {"tag": NONPREF_TAG, "gold": "non_prefer_attributes", "refs": ("non_prefered_images", "non_preferred_images")},
}


def completion_text(completion: Any) -> str:
    """The assistant text of one completion, for both TRL shapes.

    * standard: ``"<visual preference profile>..."``;
    * conversational: ``[{"role": "assistant", "content": "..."}]`` (content may also be a list of
      ``{"type": "text", "text": ...}`` blocks). Several assistant messages are joined with newlines.

    Anything else (None, numbers) reads as "" so that it scores 0.0 instead of crashing the step.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and not isinstance(completion, (bytes, bytearray)):
        parts: list[str] = []
        for message in completion:
            if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, Sequence):
                parts.extend(str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type", "text") == "text")
        return "\n".join(parts)
    return ""


@lru_cache(maxsize=2048)
def parse_cached(text: str) -> Assessment:
    """``parse_response`` once per distinct text: several rewards read the same completion in one step.
    Callers never mutate the result."""
    return parse_response(text)


def blocks_exact(a: Assessment, tag: str | None = None) -> bool:
    """Each block (or the one ``tag``) opens and closes exactly once. ``format_ok`` alone accepts a
    second ``<answer>`` block and text hidden behind a stray closing tag (``...</answer> junk </answer>``),
    because the official regex's ``.*?`` may stretch over them."""
    tags = TAGS if tag is None else (tag,)
    return all(a.tag_counts.get(t, 0) == 1 and a.raw.count(f"</{t}>") == 1 for t in tags)


def read_label(value: Any, row: int) -> str | None:
    """Dataset label -> "Image A" | "Image B"; None when the row has no label (the reward does not apply).
    Accepts "Image B", "image b.", "<answer> Image B </answer>" (the released GRPO file's form)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"column 'solution', row {row}: expected a string like 'Image A', got {type(value).__name__}")
    if "<answer>" in value:
        answer = parse_response(value).answer
        if answer is not None:
            return answer
    cleaned = " ".join(value.split()).rstrip(".").strip().lower()
    for ans in ANSWERS:
        if cleaned == ans.lower():
            return ans
    raise ValueError(
        f"column 'solution', row {row}: expected 'Image A' or 'Image B' (optionally inside <answer></answer>), "
        f"got {value[:80]!r}"
    )


def read_gold_profile(value: Any, column: str, row: int) -> dict[str, str] | None:
    """Gold profile column -> canonical dict, or None when the row has none (real-user data).
    ``datasets`` stores a missing struct either as None or as a dict of None values: both mean "no gold"."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        blank = [k for k, v in value.items() if v is None or (isinstance(v, str) and not v.strip())]
        if len(blank) == len(value):
            return None
        if blank:
            raise ValueError(f"column {column!r}, row {row}: gold profile has no term for {blank}")
    elif isinstance(value, str):
        if not value.strip():
            return None
        if value.lstrip().startswith("{"):  # a JSON-encoded dict (some JSONL exports store it so)
            try:
                return read_gold_profile(json.loads(value), column, row)
            except json.JSONDecodeError as exc:
                raise ValueError(f"column {column!r}, row {row}: not valid JSON ({exc})") from None
    else:
        raise ValueError(f"column {column!r}, row {row}: expected a dict or a 'Key: term, ...' string, got {type(value).__name__}")
    try:
        return canonicalize_profile(value)
    except ValueError as exc:
        raise ValueError(f"column {column!r}, row {row}: {exc}") from None


def column(kwargs: Mapping[str, Any], names: Sequence[str], n: int) -> list[Any] | None:
    """The first present column of ``names`` as a list of length n (None if no such column)."""
    for name in names:
        if name in kwargs and kwargs[name] is not None:
            values = list(kwargs[name])
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows for {n} completions")
            return values
    return None


def first(value: Any) -> Any:
    """First entry of a per-row list column (``reference_prompt_list``, ``prefered_images``); a bare
    string is its own first entry; None for an empty or missing value."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value or None
    if isinstance(value, Sequence):
        return value[0] if len(value) else None
    return value  # e.g. a PIL image


def stable_seed(text: str) -> int:
    """A seed from a string, equal on every rank and run (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


class MetricSink:
    """Collects sub-scores and hands them to TRL's ``log_metric(name, value)`` (means over applicable samples)."""

    def __init__(self, prefix: str, log_metric: Callable[[str, float], None] | None):
        self.prefix, self.log_metric = prefix, log_metric if callable(log_metric) else None

    def mean(self, name: str, values: Sequence[float | None]) -> None:
        vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if vals and self.log_metric is not None:
            self.log_metric(f"rewards/{self.prefix}/{name}", float(np.mean(vals)))
