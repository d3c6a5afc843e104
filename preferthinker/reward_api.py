"""A personalized reward for image-generation training, and DPO pairs from a folder of candidates.

    >>> from preferthinker import PersonalReward
    >>> reward = PersonalReward("outputs/pipeline/<run>/sft/final", liked="likes/", disliked="dislikes/")
    >>> reward(images)                      # one float in [0, 1] per image (PIL, arrays or paths), batched
    >>> reward(images, anchors=["ref.png"])  # against fixed anchors instead of the batch itself

PreferThinker judges pairs, so a reward for one image needs opponents. Two modes:

* **group** (default): every image against the other images of the same call, each pair in both orders;
  the reward is the image's mean P(preferred over an opponent). Rewards are relative to the group,
  which is what group-relative policy optimisation (GRPO-style, DDPO with per-prompt baselines) uses.
  ``opponents=k`` compares each image with its k next neighbours only (2k generations per image
  instead of 2(N-1)).
* **anchors**: every image against fixed anchor images (e.g. a few images from the base model), each
  pair in both orders; the reward is its mean P(preferred over an anchor), comparable across calls.

Probabilities come from ``preferthinker.calibration`` (calibrated when the checkpoint carries a
``calibration.json``). ``make_dpo_pairs`` ranks a folder of candidates for the user and writes
chosen/rejected pairs (JSONL) for Diffusion-DPO-style training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from preferthinker.assess import AssessInputError, Assessor, collect_images
from preferthinker.ranking import Comparison, pair_win_probability
from preferthinker.response import parse_response

__all__ = ["PersonalReward", "make_dpo_pairs"]


class PersonalReward:
    """``reward(images) -> list[float]``: how much the user (liked / disliked references) would prefer
    each image, in [0, 1]. ``model``: a checkpoint folder or a loaded ``Assessor``; keyword arguments
    are passed to ``Assessor.from_pretrained``. The references are loaded once, at construction."""

    def __init__(self, model: str | os.PathLike | Assessor, liked: Any, disliked: Any, *, opponents: int | None = None,
                 anchors: Any = None, **assessor_kwargs: Any):
        self.assessor = model if isinstance(model, Assessor) else Assessor.from_pretrained(model, **assessor_kwargs)
        if opponents is not None and int(opponents) < 1:
            raise AssessInputError(f"opponents must be >= 1 (or None for all), got {opponents}")
        self.opponents = None if opponents is None else int(opponents)
        self.liked, self.disliked = self.assessor._references(liked, disliked)
        self.anchors = self._images(anchors, "anchors") if anchors is not None else None
        self.last_comparisons: list[Comparison] = []

    def _images(self, images: Any, what: str) -> list:
        items, notes = collect_images(images, what=what)
        for n in notes:
            self.assessor._note(n)
        return [self.assessor._load(it, f"{what}[{k}]") for k, it in enumerate(items)]

    def pairs(self, n: int, n_anchors: int) -> list[tuple[int, int]]:
        """Unordered pairs to judge: (image, anchor) with anchors numbered after the images, else
        (image, neighbour) within the group; each is generated in both orders."""
        if n_anchors:
            return [(i, n + k) for i in range(n) for k in range(n_anchors)]
        k = n - 1 if self.opponents is None else min(self.opponents, n - 1)
        return sorted({tuple(sorted((i, (i + d) % n))) for i in range(n) for d in range(1, k + 1)})

    def __call__(self, images: Any, *, anchors: Any = None) -> list[float]:
        imgs = self._images(images, "images")
        anchor_imgs = self._images(anchors, "anchors") if anchors is not None else (self.anchors or [])
        n = len(imgs)
        if n == 0:
            return []
        if n == 1 and not anchor_imgs:
            raise AssessInputError("one image has no opponent in its group: pass two or more images, or anchors=[...]")
        every = imgs + anchor_imgs
        pairs = self.pairs(n, len(anchor_imgs))
        order = [o for i, j in pairs for o in ((i, j), (j, i))]
        prompts = [self.assessor._messages(self.liked, self.disliked, every[a], every[b]) for a, b in order]
        scored = self.assessor._generate(prompts)
        comps = [Comparison(a, b, parse_response(t), lo) for (a, b), (t, lo) in zip(order, scored, strict=True)]
        self.last_comparisons = comps
        cal = self.assessor.calibrator
        rewards = []
        for i in range(n):
            probs = [pair_win_probability([c for c in comps if {c.a, c.b} == {i, j}], i, j, cal)
                     for p in pairs if i in p for j in p if j != i]
            rewards.append(sum(probs) / len(probs))
        return rewards


def make_dpo_pairs(reward: PersonalReward | Assessor, candidates: Any, out_path: str | os.PathLike, *,
                   liked: Any = None, disliked: Any = None, caption: str | None = None, min_probability: float = 0.6,
                   max_candidates: int = 16) -> list[dict]:
    """Rank ``candidates`` (a folder, glob-expanded list or images) for the user and write one JSONL line
    per confident pair: ``{"caption", "chosen", "rejected", "probability", "jpg_0", "jpg_1", "label_0"}``
    (``jpg_0``/``jpg_1``/``label_0`` as in Pick-a-Pic, the layout Diffusion-DPO trains on; label_0 = 1:
    jpg_0 preferred). A pair is kept when P(chosen over rejected) >= ``min_probability``; a pair the model
    is unsure about is not training signal. The references come from ``reward`` (a PersonalReward) or
    from ``liked``/``disliked`` (with an Assessor). Returns the records written."""
    if not 0.5 <= float(min_probability) < 1.0:
        raise AssessInputError(f"min_probability must be in [0.5, 1), got {min_probability}")
    if isinstance(reward, PersonalReward):
        assessor, liked, disliked = reward.assessor, reward.liked, reward.disliked
    else:
        assessor = reward
        if liked is None or disliked is None:
            raise AssessInputError("make_dpo_pairs with an Assessor needs liked= and disliked= references")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    ranking = assessor.rank(liked, disliked, candidates, max_candidates=max_candidates)
    records = []
    for entry in ranking:
        for pw in entry.pairwise:
            p = pw["probability"]
            if p is not None and p >= min_probability:
                chosen, rejected = entry.candidate, pw["opponent"]
                records.append({"caption": caption, "chosen": chosen, "rejected": rejected, "probability": round(p, 4),
                                "jpg_0": chosen, "jpg_1": rejected, "label_0": 1, "calibrated": ranking.calibrated})
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, out)
    return records

