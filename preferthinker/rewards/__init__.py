"""GRPO reward functions for the predict-then-assess response, named in a registry, weighted by config.

Package layout (one concept per module):

* ``basic``: accuracy, format, consistency as plain TRL-shaped functions (+ configured callables);
* ``profile``: the similarity-aware prediction reward of each profile side and its shared scorer;
* ``backends``: the image backends (synthetic renderer, text-to-image via diffusers);
* ``perceptual``: image-vs-image similarity (synthetic pixel statistics, DreamSim, embedding fallback);
* ``config``: the dataclasses that hold every default, and their validation;
* ``registry``: names -> factories, user plug-ins, ``build_rewards``;
* ``inputs``: completion text and dataset columns as TRL passes them; ``report``: ``reward_report``.

Every reward keeps TRL's shape, ``fn(completions, **kwargs) -> list[float | None]``, returns a raw score
in [0, 1], and is combined by TRL's ``reward_weights``. With ``configs/reward/paper.yaml``
(accuracy 1.0, format 0.3, pref_profile 0.35, nonpref_profile 0.35) the largest total reward is
1.0 + 0.3 + 0.7 = 2.0, the paper's ``w_a*r_acc + w_f*r_format + w_p*r_predict`` with ``r_predict`` the
mean of the two profile sides.

Rewards (``REWARDS``; name = TRL metric key ``rewards/<name>/mean``), each with its ``None`` case:

* ``accuracy``: 1.0 if the single ``<answer>`` block names the labelled image; None without a label.
* ``format``: 1.0 if the four-block contract holds exactly (official fullmatch) and each block opens
  and closes once; never None.
* ``pref_profile`` / ``nonpref_profile``: ``(w_text*s_text + w_img*s_img) / (w_text + w_img)`` against
  the gold profile of that side; None without a gold profile (real-user data). s_img comes from the
  synthetic renderer (``reward=paper``; it refuses terms outside its vocabulary) or, as the released code
  computes it, from T2I(reference prompt + predicted profile) vs the first reference image (``reward=paper_real``).
* ``consistency`` (beyond the paper, off by default): 1.0 if the answer names the larger total and each
  total equals the sum of its five scores; never None.
* ``element_scores`` (beyond the paper, synthetic data only): the share of the ten per-element scores equal
  to the record's ``true_scores_a`` / ``true_scores_b``; None for a row without them.
* ``profile_exact`` (beyond the paper): the share of the ten profile slots (liked / disliked per element) whose
  term set equals the gold one; None for a row without both gold profiles.

``None`` means "this reward does not apply to this sample" (TRL turns it into NaN and ``nansum`` skips
it); ``0.0`` means "the output is wrong or malformed". The two are never mixed up.

Hack defences (each has a test in ``tests/test_rewards.py``; details in ``docs/rewards.md``):

* output longer than ``max_chars`` characters: every reward that applies is 0.0, nothing is parsed or embedded;
* several ``<answer>`` (or any other) blocks, or stray closing tags: format 0.0, and accuracy 0.0 when
  the answer block is not exactly one (the official regex alone accepts them);
* "Image A or Image B", "Image A/Image B": the parser reads no answer, accuracy 0.0;
* text outside the blocks: format 0.0;
* an empty profile block (no term at all) or a missing one: that side scores 0.0;
* the same profile in both blocks: both sides score 0.0 (a copy can be right for one side at most);
* a block present but not readable as five elements: ``s_text`` on its cleaned raw text (as the released
  code does), no image term, times ``unparsed_factor`` (0.5), so it never beats a readable profile of
  equal text similarity.

The response is read by ``preferthinker.response.parse_response`` only; this package has no format regex.

Example (TRL shape; completions may be plain strings or conversational message lists)::

    >>> from preferthinker.rewards import build_rewards
    >>> funcs, weights = build_rewards({"names": ["accuracy", "format"], "weights": [1.0, 0.3]})
    >>> [f.__name__ for f in funcs], weights
    (['accuracy', 'format'], [1.0, 0.3])
    >>> funcs[0]([[{"role": "assistant", "content": "<answer>Image B</answer>"}]], solution=["Image B"])
    [1.0]
"""

from preferthinker.rewards.backends import (
    DiffusersImageBackend,
    ImageBackendLoadError,
    ImageQuery,
    OutOfVocabularyError,
    SyntheticImageBackend,
    build_image_backend,
)
from preferthinker.rewards.basic import (
    AccuracyReward,
    ConsistencyReward,
    ElementScoresReward,
    FormatReward,
    ProfileExactReward,
    Reward,
    accuracy_reward,
    consistency_reward,
    element_scores_reward,
    format_reward,
    profile_exact_reward,
)
from preferthinker.rewards.config import (
    DEFAULT_MAX_CHARS,
    DIFFUSERS_TARGETS,
    IMAGE_BACKENDS,
    DiffusersBackendConfig,
    PredictionConfig,
    RewardConfig,
    SyntheticBackendConfig,
    resolve_device,
)
from preferthinker.rewards.inputs import completion_text
from preferthinker.rewards.perceptual import (
    DreamSimMetric,
    EmbeddingPerceptualMetric,
    load_perceptual_metric,
    synthetic_image_similarity,
)
from preferthinker.rewards.profile import MAX_PROFILE_CHARS, ProfileReward, ProfileScorer, validate_prediction
from preferthinker.rewards.registry import REWARDS, build_rewards, register_plugin, validate_reward_config
from preferthinker.rewards.report import reward_report

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DIFFUSERS_TARGETS",
    "IMAGE_BACKENDS",
    "MAX_PROFILE_CHARS",
    "REWARDS",
    "AccuracyReward",
    "ConsistencyReward",
    "DiffusersBackendConfig",
    "DiffusersImageBackend",
    "DreamSimMetric",
    "ElementScoresReward",
    "EmbeddingPerceptualMetric",
    "FormatReward",
    "ImageBackendLoadError",
    "ImageQuery",
    "OutOfVocabularyError",
    "PredictionConfig",
    "ProfileExactReward",
    "ProfileReward",
    "ProfileScorer",
    "Reward",
    "RewardConfig",
    "SyntheticBackendConfig",
    "SyntheticImageBackend",
    "accuracy_reward",
    "build_image_backend",
    "build_rewards",
    "completion_text",
    "consistency_reward",
    "element_scores_reward",
    "format_reward",
    "profile_exact_reward",
    "load_perceptual_metric",
    "register_plugin",
    "resolve_device",
    "reward_report",
    "synthetic_image_similarity",
    "validate_prediction",
    "validate_reward_config",
]
