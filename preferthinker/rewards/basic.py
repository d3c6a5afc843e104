"""The basic rewards: accuracy, format, consistency, as plain functions in the shape of TRL's ``trl/rewards``.

Each is ``fn(completions, **kwargs) -> list[float | None]``, usable as it is in ``GRPOTrainer(reward_funcs=...)``.
``max_chars`` bounds the work a reward does on a runaway completion (longer ones score 0.0 unread).
The classes at the end bind ``max_chars`` from the config and fix ``__name__`` (TRL's metric key
``rewards/<__name__>/mean``) so the registry can hand out configured, picklable callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from preferthinker.profile import ELEMENTS, split_terms
from preferthinker.response import ANSWER_TAG, NONPREF_TAG, PREF_TAG
from preferthinker.rewards.config import DEFAULT_MAX_CHARS, check_max_chars
from preferthinker.rewards.inputs import MetricSink, blocks_exact, completion_text, parse_cached, read_gold_profile, read_label

MetricFn = Callable[[str, float], None]


def accuracy_reward(completions: Sequence[Any], solution: Sequence[Any] | None = None, log_metric: MetricFn | None = None,
                    max_chars: int = DEFAULT_MAX_CHARS, **kwargs: Any) -> list[float | None]:
    """1.0 when the single ``<answer>`` block names the labelled image, else 0.0; None for rows without a label.

    Stricter than the released code in one way: the completion must hold exactly one ``<answer>`` block
    (the released code reads the last one, so a model could hedge with several). ``kwargs``: TRL passes
    every dataset column plus prompts, completion_ids, trainer_state, log_extra.

    Example::

        >>> accuracy_reward(["<answer>Image A</answer>", "<answer>Image A or Image B</answer>"],
        ...                 solution=["Image A", "Image A"])
        [1.0, 0.0]
    """
    if solution is None:
        raise ValueError("the accuracy reward needs a 'solution' column ('Image A' / 'Image B') in the dataset")
    labels = [read_label(s, i) for i, s in enumerate(solution)]
    out: list[float | None] = []
    readable: list[float] = []
    for text, label in zip((completion_text(c) for c in completions), labels, strict=True):
        if label is None:
            out.append(None)  # nothing to compare with
            continue
        if len(text) > max_chars:
            out.append(0.0)
            readable.append(0.0)
            continue
        a = parse_cached(text)
        ok = blocks_exact(a, ANSWER_TAG) and a.answer is not None
        readable.append(float(ok))
        out.append(1.0 if ok and a.answer == label else 0.0)
    sink = MetricSink("accuracy", log_metric)
    sink.mean("answer_accuracy", out)
    sink.mean("answer_readable_rate", readable)
    return out


def format_reward(completions: Sequence[Any], log_metric: MetricFn | None = None, max_chars: int = DEFAULT_MAX_CHARS,
                  **kwargs: Any) -> list[float | None]:
    """1.0 when the completion is exactly the four-block contract (official ``re.fullmatch``) with every
    block opened and closed once; else 0.0. Never None: every completion has a format.

    Example::

        >>> format_reward(["hello <answer>Image A</answer>"])
        [0.0]
    """
    out: list[float | None] = []
    official: list[float] = []
    oversize: list[float] = []
    for text in (completion_text(c) for c in completions):
        big = len(text) > max_chars
        oversize.append(float(big))
        if big:
            out.append(0.0)
            official.append(0.0)
            continue
        a = parse_cached(text)
        official.append(float(a.format_ok))
        out.append(1.0 if a.format_ok and blocks_exact(a) else 0.0)
    sink = MetricSink("format", log_metric)
    sink.mean("format_rate", out)
    sink.mean("official_regex_rate", official)  # > format_rate: the model is exploiting the loose regex
    sink.mean("oversize_rate", oversize)
    return out


def consistency_reward(completions: Sequence[Any], log_metric: MetricFn | None = None, max_chars: int = DEFAULT_MAX_CHARS,
                       **kwargs: Any) -> list[float | None]:
    """1.0 when the per-element scores sum to the written totals and the answer names the larger total
    (``Assessment.consistent``), with the think and answer blocks present once; else 0.0.
    Beyond the paper (its CoT data is filtered for this); off in ``paper.yaml``.

    Example::

        >>> consistency_reward(["<answer>Image A</answer>"])
        [0.0]
    """
    out: list[float | None] = []
    for text in (completion_text(c) for c in completions):
        if len(text) > max_chars:
            out.append(0.0)
            continue
        a = parse_cached(text)
        ok = a.consistent and blocks_exact(a, "think") and blocks_exact(a, ANSWER_TAG)
        out.append(1.0 if ok else 0.0)
    MetricSink("consistency", log_metric).mean("consistent_rate", out)
    return out


def element_scores_reward(completions: Sequence[Any], true_scores_a: Sequence[Any] | None = None,
                          true_scores_b: Sequence[Any] | None = None, log_metric: MetricFn | None = None,
                          max_chars: int = DEFAULT_MAX_CHARS, **kwargs: Any) -> list[float | None]:
    """The share of the ten per-element scores (five per image) that equal the true ones; 0.0 when the think
    block is not there once or its score lines do not read; None for rows without true scores (the GRPO recipe
    refuses the reward at start-up when no training record has them).

    Beyond the paper, and only for data that carries per-element truth (the synthetic records'
    ``true_scores_a`` / ``true_scores_b``; PreferImg has none): a denser signal than the answer, which is one
    bit per completion and decided by these scores. Missing columns are an error, not a 0.

    Example::

        >>> element_scores_reward(["<answer>Image A</answer>"], true_scores_a=[[5, 3, 3, 1, 5]], true_scores_b=[[3] * 5])
        [0.0]
    """
    if true_scores_a is None or true_scores_b is None:
        raise ValueError("the element_scores reward needs 'true_scores_a' / 'true_scores_b' columns (per-element "
                         "ground truth, which the synthetic data has and PreferImg does not); drop it from reward.names")
    out: list[float | None] = []
    readable: list[float] = []
    for row, (text, ta, tb) in enumerate(zip((completion_text(c) for c in completions), true_scores_a, true_scores_b, strict=True)):
        if ta is None or tb is None:
            out.append(None)
            continue
        truth = [*ta, *tb]
        if len(truth) != 2 * len(ELEMENTS) or not all(isinstance(v, int) for v in truth):
            raise ValueError(f"columns 'true_scores_a' / 'true_scores_b', row {row}: expected five integers each, got {ta!r} / {tb!r}")
        a = parse_cached(text) if len(text) <= max_chars else None
        if a is None or not blocks_exact(a, "think") or a.scores_a is None or a.scores_b is None:
            out.append(0.0)
            readable.append(0.0)
            continue
        readable.append(1.0)
        out.append(sum(p == t for p, t in zip([*a.scores_a, *a.scores_b], truth, strict=True)) / len(truth))
    sink = MetricSink("element_scores", log_metric)
    sink.mean("score_accuracy", out)
    sink.mean("scores_readable_rate", readable)
    return out


def profile_exact_reward(completions: Sequence[Any], prefer_attributes: Sequence[Any] | None = None,
                         non_prefer_attributes: Sequence[Any] | None = None, log_metric: MetricFn | None = None,
                         max_chars: int = DEFAULT_MAX_CHARS, **kwargs: Any) -> list[float | None]:
    """The share of the ten profile slots (five elements x liked / disliked) whose set of terms equals the gold one
    (case-insensitive, order-free); 0.0 when a profile block is not there exactly once or does not read as five
    elements; None for rows without both gold profiles.

    Beyond the paper: the prediction rewards' text similarity barely separates one liked term from two (s_text of
    a profile missing one of two terms stays near 1), which is the multi-preference profile's commonest error. Any
    data with gold profiles has what it needs (PreferImg included).

    Example::

        >>> from preferthinker.response import render_response
        >>> p = {"Art Styles": "Cubism, Pop Art", "Color": "Teal", "Artistic Medium": "Pencil Sketch", "Saturation": "Muted", "Detail": "Fine"}
        >>> n = {**p, "Art Styles": "Art Deco"}
        >>> profile_exact_reward([render_response({**p, "Art Styles": "Pop Art"}, n, [5] * 5, [3] * 5)],
        ...                      prefer_attributes=[p], non_prefer_attributes=[n])
        [0.9]
    """
    if prefer_attributes is None or non_prefer_attributes is None:
        raise ValueError("the profile_exact reward needs 'prefer_attributes' and 'non_prefer_attributes' columns (gold profiles)")

    def term_set(value: Any) -> frozenset[str]:
        return frozenset(t.lower() for t in split_terms(str(value or "")))

    out: list[float | None] = []
    parsed: list[float] = []
    for row, (text, gp, gn) in enumerate(zip((completion_text(c) for c in completions), prefer_attributes, non_prefer_attributes, strict=True)):
        gold_p = read_gold_profile(gp, "prefer_attributes", row)
        gold_n = read_gold_profile(gn, "non_prefer_attributes", row)
        if gold_p is None or gold_n is None:
            out.append(None)
            continue
        a = parse_cached(text) if len(text) <= max_chars else None
        if a is None or a.preference is None or a.non_preference is None or not (blocks_exact(a, PREF_TAG) and blocks_exact(a, NONPREF_TAG)):
            out.append(0.0)
            parsed.append(0.0)
            continue
        parsed.append(1.0)
        hits = sum(term_set(pred[e]) == term_set(gold[e]) for pred, gold in ((a.preference, gold_p), (a.non_preference, gold_n)) for e in ELEMENTS)
        out.append(hits / (2 * len(ELEMENTS)))
    sink = MetricSink("profile_exact", log_metric)
    sink.mean("slot_accuracy", out)
    sink.mean("parsed_rate", parsed)
    return out


class Reward:
    """Base of the configured reward callables: a fixed ``__name__`` (TRL logs ``rewards/<__name__>/mean|std``)
    and plain attributes only, so instances pickle (multi-process data loaders, ``copy.deepcopy``)."""

    name = "reward"

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS):
        check_max_chars(max_chars)
        self.__name__ = self.name
        self.max_chars = max_chars

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_chars={self.max_chars})"

    def _texts(self, completions: Sequence[Any]) -> list[str]:
        return [completion_text(c) for c in completions]


class AccuracyReward(Reward):
    """``accuracy_reward`` with a configured ``max_chars``.

    Example::

        >>> AccuracyReward()(["<answer>Image B</answer>"], solution=["Image B"])
        [1.0]
    """

    name = "accuracy"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return accuracy_reward(completions, **{**kwargs, "max_chars": self.max_chars})


class FormatReward(Reward):
    """``format_reward`` with a configured ``max_chars``."""

    name = "format"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return format_reward(completions, **{**kwargs, "max_chars": self.max_chars})


class ConsistencyReward(Reward):
    """``consistency_reward`` with a configured ``max_chars``."""

    name = "consistency"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return consistency_reward(completions, **{**kwargs, "max_chars": self.max_chars})


class ElementScoresReward(Reward):
    """``element_scores_reward`` with a configured ``max_chars``."""

    name = "element_scores"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return element_scores_reward(completions, **{**kwargs, "max_chars": self.max_chars})


class ProfileExactReward(Reward):
    """``profile_exact_reward`` with a configured ``max_chars``."""

    name = "profile_exact"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return profile_exact_reward(completions, **{**kwargs, "max_chars": self.max_chars})
