"""``reward_report``: every reward's mean and sub-scores over a list of completions (evaluation, debugging)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from preferthinker.rewards.registry import build_rewards

# All five rewards, text-only prediction: no image model is loaded for a report.
_REPORT_DEFAULT = {
    "names": ["accuracy", "format", "pref_profile", "nonpref_profile", "consistency"],
    "weights": [1.0, 0.3, 0.35, 0.35, 0.0],
    "prediction": {"image_backend": "none"},
}


def reward_report(completions: Sequence[Any], *, rewards: Any = None, **columns: Any) -> dict[str, float | None]:
    """Means of every reward and sub-score over ``completions``.

    ``rewards``: a reward config (mapping) or a list of reward callables; default: all five rewards,
    text-only prediction. ``columns``: the dataset columns (``solution``, ``prefer_attributes``, ...).
    Returns ``{"<name>": mean over applicable rows (None if none), "<name>/<sub>": ..., "n": rows}``.

    Example::

        >>> reward_report(["<answer>Image A</answer>"], rewards={"names": ["accuracy"], "weights": [1]},
        ...               solution=["Image A"])["accuracy"]
        1.0
    """
    if rewards is None or isinstance(rewards, Mapping) or type(rewards).__module__.startswith("omegaconf"):
        funcs, _ = build_rewards(rewards if rewards is not None else _REPORT_DEFAULT)
    else:
        funcs = list(rewards)
    metrics: dict[str, list[float]] = {}

    def log_metric(name: str, value: float) -> None:
        metrics.setdefault(name.removeprefix("rewards/"), []).append(value)

    report: dict[str, float | None] = {"n": len(completions)}
    for fn in funcs:
        values = fn(completions, log_metric=log_metric, **columns)
        vals = [v for v in values if v is not None]
        report[fn.__name__] = float(np.mean(vals)) if vals else None
    for name, vals in metrics.items():
        report[name] = float(np.mean(vals))
    return report
