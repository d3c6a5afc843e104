"""The reward registry: names -> factories, user plug-ins, and ``build_rewards`` for the GRPO recipe.

A factory is ``factory(cfg: RewardConfig, scorer: ProfileScorer | None = None)`` and returns a TRL reward
callable whose ``__name__`` is the registry name (TRL's metric key ``rewards/<name>/mean``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from preferthinker.rewards.basic import AccuracyReward, ConsistencyReward, ElementScoresReward, FormatReward, ProfileExactReward, Reward
from preferthinker.rewards.config import PROFILE_REWARDS, RewardConfig, parse_reward_config
from preferthinker.rewards.profile import ProfileReward, ProfileScorer
from preferthinker.runtime import ConfigError

log = logging.getLogger("preferthinker.rewards")


def _accuracy(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> AccuracyReward:
    return AccuracyReward(max_chars=cfg.max_chars)


def _format(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> FormatReward:
    return FormatReward(max_chars=cfg.max_chars)


def _consistency(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> ConsistencyReward:
    return ConsistencyReward(max_chars=cfg.max_chars)


def _element_scores(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> ElementScoresReward:
    return ElementScoresReward(max_chars=cfg.max_chars)


def _profile_exact(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> ProfileExactReward:
    return ProfileExactReward(max_chars=cfg.max_chars)


def _pref_profile(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> ProfileReward:
    return ProfileReward("pref", cfg.prediction, cfg.max_chars, scorer=scorer)


def _nonpref_profile(cfg: RewardConfig, scorer: ProfileScorer | None = None) -> ProfileReward:
    return ProfileReward("nonpref", cfg.prediction, cfg.max_chars, scorer=scorer)


# name -> factory(cfg: RewardConfig, scorer: ProfileScorer | None) -> reward callable with __name__ == name
REWARDS: dict[str, Callable[..., Reward]] = {
    "accuracy": _accuracy,
    "format": _format,
    "pref_profile": _pref_profile,
    "nonpref_profile": _nonpref_profile,
    "consistency": _consistency,
    "element_scores": _element_scores,
    "profile_exact": _profile_exact,
}


def register_plugin(name: str) -> None:
    """``reward.names`` may name a user reward as ``package.module:factory`` (importable from the launch
    directory or PYTHONPATH): ``factory(cfg, scorer=None)`` returns a TRL reward callable whose ``__name__`` is
    ``factory``'s name (the metric key). It is added to ``REWARDS`` under the full name."""
    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"reward.names: cannot load the reward {name!r} ({type(e).__name__}: {e}); "
                          "use 'package.module:factory' with the module importable from the launch directory") from None
    if not callable(factory):
        raise ConfigError(f"reward.names: {name!r} is not callable")
    REWARDS[name] = factory


def validate_reward_config(cfg: Any) -> RewardConfig:
    """Check a reward config at start-up (shape, weights, prediction settings, and every name against the
    registry, loading plug-ins); every error is a ``ConfigError`` naming the key, the value and the fix."""
    rc = parse_reward_config(cfg)
    for n in rc.names:
        if ":" in n and n not in REWARDS:
            register_plugin(n)
    bad = [n for n in rc.names if n not in REWARDS]
    if bad:
        raise ConfigError(f"reward.names: unknown reward(s) {bad}; choose from {sorted(REWARDS)} or name your own as "
                          f"'package.module:factory'")
    return rc


def build_rewards(cfg: Any) -> tuple[list[Reward], list[float]]:
    """Validate ``cfg`` and return ``(reward_funcs, reward_weights)`` for ``GRPOTrainer`` / ``GRPOConfig``.

    The two profile rewards share one ``ProfileScorer`` (one embedder, one image backend). Heavy models
    load on first call, not here.

    Example::

        >>> funcs, weights = build_rewards({"names": ["accuracy", "format"], "weights": [1.0, 0.3]})
        >>> [f.__name__ for f in funcs], weights
        (['accuracy', 'format'], [1.0, 0.3])
    """
    rc = validate_reward_config(cfg)
    scorer = ProfileScorer(rc.prediction) if set(PROFILE_REWARDS) & set(rc.names) else None
    funcs = [REWARDS[name](rc, scorer=scorer) for name in rc.names]
    for name, fn in zip(rc.names, funcs):
        if fn.__name__ != name.rpartition(":")[2]:  # the registry key (plugin: its factory's name) is the metric key
            raise RuntimeError(f"reward factory {name!r} returned a callable named {fn.__name__!r}")
    log.info("rewards: %s", ", ".join(f"{n} x{w:g}" for n, w in zip(rc.names, rc.weights)))
    return funcs, list(rc.weights)
