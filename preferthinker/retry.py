"""Bounded retries when a response has no readable answer, and the status that says what happened.

A model that was trained on full reference sets, or a small one, sometimes writes no ``<answer>`` block
(issue #27: 42 % of pairs with two references per side). The Assessor never leaves the user with an empty
result and no explanation; per pair it tries, in order, within a fixed budget:

1. the given order (A, B), greedy: ``status="ok"`` when it has an answer;
2. the other candidate order (B shown as A), greedy, already generated in the same batch for the
   probability: ``status="from_swapped_order"``, its scores, rationales and answer mapped back to the
   caller's names;
3. up to ``RetryPolicy.retries`` sampled generations (temperature ``RetryPolicy.temperature``, seeded, so a
   rerun gives the same text), alternating the two orders, all in one batch: ``status="retried"``;
4. nothing readable: ``status="no_answer"``, every field the responses did not state is None, ``preferred``
   is None, and every raw text is kept in ``Verdict.attempts``.

The functions here are pure (no model): the Assessor generates, these decide.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from preferthinker.response import Assessment, parse_response

STATUSES = ("ok", "from_swapped_order", "retried", "no_answer")
MAX_RETRIES = 16  # each retry is one more generation per pair; more than this is a typo, not a budget
_FLIP = {"Image A": "Image B", "Image B": "Image A"}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the Assessor tries for a readable answer: ``retries`` sampled generations per pair after both
    greedy orders failed (0 = none), at ``temperature``, seeded by ``seed`` (+ the attempt number)."""

    retries: int = 2
    temperature: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be an integer in 0..{MAX_RETRIES}, got {self.retries!r}")
        if not 0.0 < float(self.temperature) <= 5.0:
            raise ValueError(f"retry temperature must be in (0, 5], got {self.temperature!r}")


@dataclass
class Attempt:
    """One generation for a pair: which order it showed, whether it was sampled, the raw text, its answer
    in the caller's names (None when unreadable) and its answer log-odds (in the order shown)."""

    order: str  # "given" (A, B) | "swapped" (B shown as Image A)
    sampled: bool
    raw: str
    answer: str | None
    logodds: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def in_given_names(a: Assessment) -> Assessment:
    """A parse of the swapped prompt (B shown as Image A) with A and B exchanged back: scores, rationales,
    totals and the answer then speak of the caller's Image A and Image B. Profiles need no change."""
    return dataclasses.replace(
        a, scores_a=a.scores_b, scores_b=a.scores_a, rationales_a=a.rationales_b, rationales_b=a.rationales_a,
        total_a=a.total_b, total_b=a.total_a, total_terms_a=a.total_terms_b, total_terms_b=a.total_terms_a,
        answer=_FLIP.get(a.answer) if a.answer else None,
    )


def make_attempt(order: str, sampled: bool, scored: tuple[str, float | None]) -> tuple[Attempt, Assessment]:
    """Parse one generation; the Assessment is in the caller's names whatever the order shown."""
    text, logodds = scored
    parsed = parse_response(text)
    mapped = in_given_names(parsed) if order == "swapped" else parsed
    return Attempt(order, sampled, text, mapped.answer, logodds), mapped


def retry_orders(retries: int) -> list[str]:
    """The order each sampled retry shows: alternating, given first."""
    return ["given" if k % 2 == 0 else "swapped" for k in range(retries)]


def choose(attempts: Sequence[tuple[Attempt, Assessment]]) -> tuple[str, int]:
    """(status, index of the attempt whose fields the verdict reports) for a pair's attempts in the order
    they were made: [given greedy, swapped greedy, sampled...]. No readable answer: the given greedy one."""
    for k, (att, _) in enumerate(attempts):
        if att.answer is not None:
            if k == 0:
                return "ok", 0
            return ("from_swapped_order" if k == 1 and not att.sampled else "retried"), k
    return "no_answer", 0


def first_readable(attempts: Sequence[tuple[Attempt, Assessment]], order: str) -> tuple[Attempt, Assessment] | None:
    """The first attempt of ``order`` with a readable answer (the evidence that order gives the probability)."""
    return next(((a, p) for a, p in attempts if a.order == order and a.answer is not None), None)


@contextlib.contextmanager
def sampling(generator: Any, temperature: float, seed: int) -> Iterator[None]:
    """Make ``generator`` sample at ``temperature`` with a fixed seed for the duration, then restore its
    settings, its engine and the global random state (the caller's own RNG streams are not disturbed).
    The fast engine decodes greedily only, so sampling goes through transformers' generate."""
    import torch

    saved_settings, saved_engine = generator.settings, generator.engine
    device = generator.device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        generator.settings = dataclasses.replace(saved_settings, do_sample=True, temperature=float(temperature))
        generator.engine = "hf"
        try:
            yield
        finally:
            generator.settings, generator.engine = saved_settings, saved_engine
