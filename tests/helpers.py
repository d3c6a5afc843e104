"""A mini dataset in the official layout (no dependence on the synthetic engine): each user likes one
colour and dislikes another; 12 distinct 56x56 images per sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from preferthinker.data.schema import PreferenceRecord, write_bench, write_train_jsonl
from preferthinker.prompting import FINAL_INSTRUCTION
from preferthinker.data.synthetic.teacher import check_note
from preferthinker.response import render_response

COLORS = {"Crimson": (200, 30, 40), "Cobalt": (30, 60, 200), "Emerald": (30, 170, 70), "Amber": (230, 160, 20)}


def _profile(color: str) -> dict:
    return {"Art Styles": "Minimalism", "Color": color, "Artistic Medium": "Flat Digital", "Saturation": "Vivid", "Detail": "Smooth"}


def make_mini_dataset(root: Path, n_train: int = 24, n_bench: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names = list(COLORS)

    def img(path: Path, color: str) -> str:
        base = np.array(COLORS[color], np.float32)
        arr = np.clip(base + rng.normal(0, 12, (56, 56, 3)), 0, 255).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        return path.name

    def records(n: int, img_dir: Path, tag: str) -> list[PreferenceRecord]:
        out = []
        for i in range(n):
            like, dislike = names[i % 4], names[(i + 1 + (i // 4) % 3) % 4]
            pref = [img(img_dir / f"{tag}{i}_p{j}.png", like) for j in range(3)]
            nonp = [img(img_dir / f"{tag}{i}_n{j}.png", dislike) for j in range(3)]
            good, bad = img(img_dir / f"{tag}{i}_good.png", like), img(img_dir / f"{tag}{i}_bad.png", dislike)
            label = "Image A" if i % 2 == 0 else "Image B"
            a, b = (good, bad) if label == "Image A" else (bad, good)
            hi, lo = [3, 5, 3, 3, 3], [3, 1, 3, 3, 3]
            sa, sb = (hi, lo) if label == "Image A" else (lo, hi)
            ca, cb = (like, dislike) if label == "Image A" else (dislike, like)
            color_note = f"{check_note('A', ca, [like], dislike)} {check_note('B', cb, [like], dislike)}"  # describe_candidates=checks
            resp = render_response(_profile(like), _profile(dislike), sa, sb,
                                   [f"hue is {c}" for c in ("flat", ca, "flat", "even", "smooth")],
                                   [f"hue is {c}" for c in ("flat", cb, "flat", "even", "smooth")],
                                   section_notes=["", color_note, "", "", ""])
            out.append(PreferenceRecord(a, b, pref, nonp, label, user_id=f"{tag}u{i}", prefer_attributes=_profile(like),
                                        non_prefer_attributes=_profile(dislike), reference_prompt_list=[f"scene {i}"],
                                        response=resp, instruction=FINAL_INSTRUCTION,
                                        extra={"true_scores_a": sa, "true_scores_b": sb, "content_seed": i,
                                               # per-image ground truth, as the synthetic engine writes it (alignment rows)
                                               "true_profile_a": _profile(like if label == "Image A" else dislike),
                                               "true_profile_b": _profile(dislike if label == "Image A" else like),
                                               "reference_profiles": {"preferred": [_profile(like)] * 3, "non_preferred": [_profile(dislike)] * 3}}))
        return out

    train = records(n_train, root / "train" / "images", "t")
    write_train_jsonl(train, root / "train" / "sft.jsonl")
    write_train_jsonl([PreferenceRecord(**{**r.__dict__, "response": None}) for r in train], root / "train" / "grpo.jsonl")
    for sub in ("SP_ID", "SP_OD"):
        write_bench(records(n_bench, root / "data" / sub / "images", sub), root / "data" / sub / f"{sub}.json")
    return root


class _Brevity:
    """Shorter is better: a reward with variance even for an untrained policy (tests of GRPO mechanics)."""

    __name__ = "brevity"

    def __call__(self, completions, **kwargs):
        from preferthinker.rewards import completion_text

        return [1.0 - min(len(completion_text(c)), 200) / 200 for c in completions]


def brevity(cfg=None, scorer=None):
    """Reward plugin factory, used as ``reward.names=[...,tests.helpers:brevity]``."""
    return _Brevity()
