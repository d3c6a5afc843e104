"""Synthetic PreferImg: a procedural stand-in for the paper's text-to-image + Claude data pipeline.

* ``vocabulary.yaml`` / ``vocabulary``: the one vocabulary (>= 6 terms per element, with renderer keys);
* ``render``: ``render_image(content_seed, profile, size)``; content from the seed, taste from the profile;
* ``features``: pixel statistics that make each element measurable;
* ``users``: single- and multi-preference users, references, candidates, the scoring rule, the hold-out rule;
* ``teacher``: the CoT teacher (full response through ``response.render_response``) and its filter;
* ``splits``: ``make_dataset(cfg)`` writes SP_ID / SP_OD / MP_ID / MP_OD and train/{sft,grpo}.jsonl;
* ``baseline``: the non-learned pixel-statistics baseline (``baseline_predict(record, image_root)``).

See docs/synthetic_data.md.
"""

from preferthinker.data.synthetic.vocabulary import Vocabulary, load_vocabulary
from preferthinker.data.synthetic.render import describe, make_content, render_array, render_image, vocabulary_sheet
from preferthinker.data.synthetic.users import HeldOut, User, UserSettings, make_user, score_element, score_profile
from preferthinker.data.synthetic.teacher import passes_filter, teach
from preferthinker.data.synthetic.splits import DataConfigError, make_dataset, validate_config

__all__ = [
    "DataConfigError",
    "HeldOut",
    "User",
    "UserSettings",
    "Vocabulary",
    "baseline_predict",
    "describe",
    "evaluate_bench",
    "load_vocabulary",
    "make_content",
    "make_dataset",
    "make_user",
    "measure",
    "passes_filter",
    "render_array",
    "render_image",
    "score_element",
    "score_profile",
    "teach",
    "validate_config",
    "vocabulary_sheet",
]


def __getattr__(name: str):
    if name in ("baseline_predict", "evaluate_bench"):
        from preferthinker.data.synthetic import baseline

        return getattr(baseline, name)
    if name == "measure":
        from preferthinker.data.synthetic.features import measure

        return measure
    raise AttributeError(f"module 'preferthinker.data.synthetic' has no attribute {name!r}")
