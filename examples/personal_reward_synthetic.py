"""Worked example: a PreferThinker checkpoint as the reward of an image generator, end to end offline.

The project's synthetic renderer stands in for the text-to-image model: "generating" an image for a
prompt means rendering the prompt's content (a seed) in some style profile (five elements). We

1. make a user: liked images in one profile, disliked images in another;
2. "generate" N candidates for one prompt, each in a random mix of the two profiles' elements;
3. score them with ``PersonalReward`` (one float per image, batched): the reward an RL loop would use;
4. keep the best-of-N, and write chosen/rejected pairs for Diffusion-DPO with ``make_dpo_pairs``;
5. check against the truth the renderer knows: how many of the user's liked elements each image has.

    python examples/personal_reward_synthetic.py --model outputs/pipeline/<run>/sft/final --out outputs/reward_demo
    python examples/personal_reward_synthetic.py --model CKPT --n 6 --size 56 --device cpu

Use ``--size`` equal to the image size the checkpoint was trained on (56 for the tiny pipeline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def make_user(rng: np.random.Generator, folder: Path, size: int, n_refs: int = 3) -> tuple[dict, dict, list[Path], list[Path]]:
    from preferthinker.data.synthetic.render import random_profile, render_image

    liked_p = random_profile(rng)
    disliked_p = random_profile(rng)
    while any(disliked_p[e] == liked_p[e] for e in liked_p):  # two clearly different tastes
        disliked_p = random_profile(rng)
    liked, disliked = [], []
    for side, prof, out in (("liked", liked_p, liked), ("disliked", disliked_p, disliked)):
        for k in range(n_refs):
            path = folder / f"{side}_{k}.png"
            render_image(int(rng.integers(1 << 30)), prof, size).save(path)
            out.append(path)
    return liked_p, disliked_p, liked, disliked


def generate(rng: np.random.Generator, prompt_seed: int, liked_p: dict, disliked_p: dict, n: int, size: int,
             folder: Path) -> tuple[list[Path], list[int]]:
    """The stand-in T2I model: the same content, each element drawn from the liked or the disliked profile."""
    from preferthinker.data.synthetic.render import render_image

    paths, truth = [], []
    for k in range(n):
        take = rng.random(len(liked_p)) < (k + 0.5) / n  # spread: from mostly disliked to mostly liked elements
        prof = {e: (liked_p[e] if t else disliked_p[e]) for e, t in zip(liked_p, take)}
        path = folder / f"candidate_{k}.png"
        render_image(prompt_seed, prof, size).save(path)
        paths.append(path)
        truth.append(int(take.sum()))
    return paths, truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="latest", help="checkpoint folder (default: newest run under ./outputs)")
    ap.add_argument("--out", default="outputs/reward_example", help="folder for the images and the DPO pairs")
    ap.add_argument("--n", type=int, default=6, help="candidates per prompt (default 6)")
    ap.add_argument("--size", type=int, default=56, help="image size in pixels (as the checkpoint was trained)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be >= 2")

    from preferthinker import PersonalReward, make_dpo_pairs

    out = Path(args.out)
    (out / "user").mkdir(parents=True, exist_ok=True)
    (out / "candidates").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    liked_p, disliked_p, liked, disliked = make_user(rng, out / "user", args.size)
    cands, truth = generate(rng, int(rng.integers(1 << 30)), liked_p, disliked_p, args.n, args.size, out / "candidates")

    reward = PersonalReward(args.model, liked, disliked, device=args.device, max_new_tokens=args.max_new_tokens)
    scores = reward(cands)  # one batched call: N(N-1) generations
    best = int(np.argmax(scores))
    rho = float(np.corrcoef(np.argsort(np.argsort(scores)), np.argsort(np.argsort(truth)))[0, 1]) if len(set(truth)) > 1 else float("nan")
    print(f"user likes    {liked_p}\nuser dislikes {disliked_p}\n")
    print(f"{'candidate':<18} {'liked elements':>14} {'reward':>8}")
    for path, t, s in zip(cands, truth, scores):
        print(f"{path.name:<18} {t:>11}/5 {s:>8.3f}" + ("   <- best of N" if path == cands[best] else ""))
    print(f"\nSpearman(reward, liked elements) = {rho:+.2f}  (probabilities "
          f"{'calibrated' if reward.assessor.calibrator else 'uncalibrated: no calibration.json'})")
    pairs = make_dpo_pairs(reward, out / "candidates", out / "dpo_pairs.jsonl", caption=f"prompt seed {args.seed}")
    print(f"wrote {len(pairs)} chosen/rejected pairs to {out / 'dpo_pairs.jsonl'}")
    (out / "rewards.json").write_text(json.dumps({"candidates": [str(p) for p in cands], "liked_elements": truth,
                                                  "reward": scores, "spearman": rho}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
