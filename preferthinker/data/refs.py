"""How many reference images per side a training row shows: a per-record draw of 1 to 5.

Real users rarely have exactly five liked and five disliked images; a model trained only on full
reference sets fails to answer when shown two (issue #27). ``data.refs_per_side`` makes the training rows
show a drawn subset instead:

- ``null`` (or absent): every reference up to ``prompt.max_refs``, as the released code slices ``[:5]``.
- an int ``k``: exactly ``k`` per side (capped at what the record has).
- a list of allowed counts, e.g. ``[1, 2, 3, 5]``: one drawn uniformly per side. A count listed twice is drawn
  twice as often (``[1, 2, 3, 4, 5, 5, 5, 5]``: five references half the time).
- a mapping ``{min: 1, max: 5}`` (optionally ``paired: true``): a count drawn uniformly in [min, max]. From the
  command line replace the list with ``~data.refs_per_side +data.refs_per_side={min:1,max:3}`` (Hydra does not
  merge a mapping into a list).

The liked and disliked counts are drawn independently (``data.refs_paired: false``, the default), because users
hold uneven sets (three likes, one dislike); ``refs_paired: true`` draws one count for both sides. Which references are
kept is drawn too (a seeded subset, in the record's order), so the model does not learn that only the first
images matter. Each draw is seeded from the run's seed and the record's identity (its candidate and reference
paths), never from its position, so a resumed run, a reshuffled file or another worker sees the same rows.

The SFT target does not change with the subset: the synthetic teacher writes the user's true profile, which
is what a model should infer from any subset that shows it. A blind subset need not show it: a multi-preference
(MP) user likes images of two profiles, and a drawn subset of one to three liked images can hold only one of them,
while the target still names both terms and scores a candidate of the unseen profile "preferred". With the
default draw that was 437 of the 1,524 MP rows of the embedded default's 3,000 (29 %): rows whose target the
input does not determine. When the caller gives the liked images' groups (``liked_groups``: synthetic records
carry each reference's profile in ``reference_profiles``), ``draw_refs`` keeps one liked image of every group,
raising the count to the number of groups where it is smaller; a subset that already covers them is unchanged,
and so is the disliked side. ``data.refs_cover_profiles: true`` asks for that; the default (false) is the blind
draw, because the tiny default trained on covering rows scored lower on two seeds (3.5 and 7.3 points; MP notes
miscopied their profile half as often, but the model wrote two liked terms for single-profile users two to three
times as often: docs/results.md). Released data does not label its references, so a draw on it can hide one
of an MP user's profiles either way: its config (``configs/data/official.yaml``) shows every reference.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_COUNT = 64  # an absurd count is a config typo, not a request


@dataclass(frozen=True)
class RefDraw:
    """Allowed reference counts per side and whether both sides share one draw."""

    counts: tuple[int, ...]
    paired: bool = False
    cover_profiles: bool = False  # data.refs_cover_profiles: a labelled MP record's subset shows each liked profile

    def __post_init__(self) -> None:
        if not self.counts:
            raise ValueError("data.refs_per_side: no allowed reference count")
        bad = [c for c in self.counts if not isinstance(c, int) or isinstance(c, bool) or not 1 <= c <= MAX_COUNT]
        if bad:
            raise ValueError(f"data.refs_per_side: counts must be integers in 1..{MAX_COUNT}, got {bad}")


def parse_ref_draw(value: Any, paired: bool = False, cover_profiles: bool = False) -> RefDraw | None:
    """``data.refs_per_side`` from the config (None, int, list of ints or {min, max, paired}), ``data.refs_paired`` and
    ``data.refs_cover_profiles`` -> RefDraw | None. Raises ValueError naming the field for anything else."""
    if not isinstance(cover_profiles, bool):
        raise ValueError(f"data.refs_cover_profiles: expected true or false, got {cover_profiles!r}")
    if value is None:
        return None
    if not isinstance(paired, bool):
        raise ValueError(f"data.refs_paired: expected true or false, got {paired!r}")
    if isinstance(value, bool):
        raise ValueError(f"data.refs_per_side: expected null, an int, a list of ints or {{min, max}}, got {value!r}")
    if isinstance(value, int):
        return RefDraw((value,), paired, cover_profiles)
    if isinstance(value, Mapping):
        unknown = set(value) - {"min", "max", "paired"}
        if unknown:
            raise ValueError(f"data.refs_per_side: unknown keys {sorted(unknown)}; use min, max, paired")
        try:
            lo, hi = int(value.get("min", 1)), int(value.get("max", 5))
        except (TypeError, ValueError):
            raise ValueError(f"data.refs_per_side: min and max must be integers, got {dict(value)!r}") from None
        if lo > hi:
            raise ValueError(f"data.refs_per_side: min={lo} > max={hi}")
        if lo < 1 or hi > MAX_COUNT:
            raise ValueError(f"data.refs_per_side: min and max must lie in 1..{MAX_COUNT}, got {lo}..{hi}")
        return RefDraw(tuple(range(lo, hi + 1)), paired=bool(value.get("paired", paired)), cover_profiles=cover_profiles)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        counts = tuple(value)
        if any(isinstance(c, bool) or not isinstance(c, int) for c in counts):
            raise ValueError(f"data.refs_per_side: a list must hold integers, got {list(value)!r}")
        return RefDraw(tuple(sorted(counts)), paired, cover_profiles)  # a repeated count weighs its draw: [1, 2, 3, 4, 5, 5] draws 5 twice as often
    raise ValueError(f"data.refs_per_side: expected null, an int, a list of ints or {{min, max}}, got {value!r}")


def record_key(image_a: str, image_b: str, preferred: Sequence[str], non_preferred: str | Sequence[str]) -> int:
    """A stable integer naming a record by its content (paths), independent of its position in a file."""
    text = "\x1f".join([image_a, image_b, *preferred, "\x1e", *non_preferred])
    return zlib.crc32(text.encode("utf-8"))


def draw_refs(preferred: Sequence[str], non_preferred: Sequence[str], draw: RefDraw, *, seed: int, key: int,
              max_refs: int, liked_groups: Sequence[Hashable] | None = None) -> tuple[list[str], list[str]]:
    """The references one row shows: per side a seeded subset (record order kept) of a drawn size, at most
    ``max_refs`` and at most what the side has. Lists that are empty stay empty (no reference part).

    ``liked_groups`` (one label per liked image, e.g. the profile it was rendered with): the liked subset keeps at
    least one image of every label (as many as ``max_refs`` allows), so a multi-preference user's row shows each
    of the profiles its target names. A subset that already covers them is the one drawn without the labels."""
    if liked_groups is not None and len(liked_groups) != len(preferred):
        raise ValueError(f"draw_refs: {len(liked_groups)} liked groups for {len(preferred)} liked images")
    rng = random.Random(f"{seed}:{key}")  # str seeds hash stably (sha512), unlike hash()

    def pick(paths: Sequence[str], k: int) -> list[int]:
        k = min(k, max_refs, len(paths))
        return sorted(rng.sample(range(len(paths)), k))

    k_liked = rng.choice(draw.counts)
    k_disliked = k_liked if draw.paired else rng.choice(draw.counts)
    liked, disliked = pick(preferred, k_liked), pick(non_preferred, k_disliked)
    if liked_groups is not None:
        liked = _cover_groups(liked, liked_groups, min(max_refs, len(preferred)), random.Random(f"{seed}:{key}:cover"))
    return [preferred[i] for i in liked], [non_preferred[i] for i in disliked]


def _cover_groups(keep: list[int], groups: Sequence[Hashable], cap: int, rng: random.Random) -> list[int]:
    """``keep`` (sorted indices) changed as little as possible to hold one index of every group (up to ``cap``
    images): each missing group gets one of its images drawn with ``rng``, taking the place of a kept image of a
    group that has more than one kept, or added when none can give one up."""
    labels = list(dict.fromkeys(groups))
    kept = list(keep)
    for label in labels:
        if any(groups[i] == label for i in kept):
            continue
        count = {g: sum(groups[i] == g for i in kept) for g in labels}
        spare = [i for i in kept if count[groups[i]] > 1]
        if spare:
            kept.remove(rng.choice(spare))
        elif len(kept) >= cap:
            break  # max_refs is smaller than the number of groups: nothing more can be shown
        kept.append(rng.choice([i for i, g in enumerate(groups) if g == label]))
    return sorted(kept)
