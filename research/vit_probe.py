"""Can the tiny Qwen2.5-VL *vision tower alone* learn an element? A ViT + linear-head probe, no language model.

Trains a freshly initialised Qwen2.5-VL vision tower (patch embedding, windowed ViT blocks, 2x2 merger: the
tiny default's sizes unless flagged) with one linear head per element on the mean of its merged tokens, by
cross-entropy over each element's terms, on the single images of a synthetic dataset (candidates and one
reference per side of each training record), and reports per-element accuracy on held-out SP_ID candidates.
It separates "the ViT cannot form the feature" from "the language model does not read it out" (compare
``vision_probe.py``, the same question through the whole model) and tests curricula:

    python research/vit_probe.py --data data/synthetic112 --image-size 112 --elements Detail --lr 5e-4      # Detail alone
    python research/vit_probe.py --data data/synthetic112 --image-size 112 --lr 5e-4                        # all five at once
    python research/vit_probe.py --data data/synthetic112 --image-size 112 --lr 5e-4 --first-only Detail --first-steps 300
    python research/vit_probe.py --data data/synthetic112 --image-size 112 --lr 5e-4 --steps 1400 \
        --first-only "Art Styles,Detail" --first-steps 800                                               # two hard ones first

Prints one JSON line per evaluation and a final JSON line (``--json`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vision_probe import items_of  # noqa: E402

from preferthinker.data.schema import default_image_root, load_bench, load_train_jsonl  # noqa: E402
from preferthinker.data.synthetic.vocabulary import load_vocabulary  # noqa: E402
from preferthinker.profile import ELEMENTS  # noqa: E402
from preferthinker.prompting import load_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--elements", default=",".join(ELEMENTS), help="comma-separated elements the heads are trained on")
    ap.add_argument("--first-only", default=None, help="comma-separated elements: train only their heads for the first --first-steps steps")
    ap.add_argument("--first-steps", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--merge", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-n", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    elements = [e.strip() for e in a.elements.split(",") if e.strip()]
    first = [e.strip() for e in (a.first_only or "").split(",") if e.strip()]
    for e in elements + first:
        if e not in ELEMENTS:
            ap.error(f"{e!r} is not a profile element; choose from {list(ELEMENTS)}")
    if not set(first) <= set(elements):
        ap.error(f"--first-only {a.first_only!r} must name elements of --elements")
    if a.image_size % (a.patch * a.merge):
        ap.error(f"--image-size {a.image_size} must be a multiple of patch x merge = {a.patch * a.merge}")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    cfg = Qwen2_5_VLVisionConfig(depth=a.depth, hidden_size=a.hidden, num_heads=max(1, a.hidden // 16), intermediate_size=2 * a.hidden,
                                 out_hidden_size=128, patch_size=a.patch, spatial_merge_size=a.merge, window_size=a.patch * a.merge * 4,
                                 fullatt_block_indexes=[a.depth - 1], temporal_patch_size=2)
    vit = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg)
    vocab = load_vocabulary()
    names = {e: vocab.names(e) for e in elements}
    heads = torch.nn.ModuleDict({e: torch.nn.Linear(cfg.out_hidden_size, len(names[e])) for e in elements})
    px = a.image_size * a.image_size
    proc = Qwen2VLImageProcessor(size={"shortest_edge": px, "longest_edge": px}, patch_size=a.patch, merge_size=a.merge, temporal_patch_size=2)

    root = Path(a.data)
    train_items = items_of(load_train_jsonl(root / "train" / "sft.jsonl", root / "train" / "images"), root / "train" / "images", train=True)
    bench = root / "data" / "SP_ID" / "SP_ID.json"
    eval_items = items_of(load_bench(bench), default_image_root(bench), train=False)[: a.eval_n]
    if len(train_items) < a.batch or not eval_items:
        sys.exit(f"{root}: {len(train_items)} training images with per-image truth and {len(eval_items)} held-out ones; "
                 "need at least --batch and one (a synthetic dataset from scripts/make_data.py)")

    def batch_of(items):
        enc = proc(images=[np.array(load_image(p, px, px)) for p, _ in items], return_tensors="pt")
        labels = {e: torch.tensor([names[e].index(q[e]) for _, q in items]) for e in elements}
        return enc["pixel_values"], enc["image_grid_thw"], labels

    def pooled(pixels, grid):
        out = vit(pixels, grid_thw=grid)
        h = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state
        return h.view(grid.shape[0], -1, h.shape[-1]).mean(1)  # one image = grid/merge^2 merged tokens, in order

    def accuracy() -> dict:
        vit.eval()
        right = {e: 0 for e in elements}
        with torch.no_grad():
            for i in range(0, len(eval_items), 64):
                pixels, grid, labels = batch_of(eval_items[i:i + 64])
                h = pooled(pixels, grid)
                for e in elements:
                    right[e] += int((heads[e](h).argmax(-1) == labels[e]).sum())
        vit.train()
        return {e: round(right[e] / len(eval_items), 3) for e in elements}

    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, a.steps // 20)))
    rng = random.Random(a.seed)
    print(f"vision tower {sum(p.numel() for p in vit.parameters()):,} params; {len(train_items)} training images, "
          f"{len(eval_items)} held-out; elements {elements}", flush=True)
    curve, t0 = [], time.time()
    for step in range(1, a.steps + 1):
        pixels, grid, labels = batch_of(rng.sample(train_items, a.batch))
        h = pooled(pixels, grid)
        active = first if first and step <= a.first_steps else elements
        loss = sum(torch.nn.functional.cross_entropy(heads[e](h), labels[e]) for e in active)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % a.eval_every == 0 or step == a.steps:
            train_s = time.time() - t0
            curve.append({"step": step, "train_s": round(train_s, 1), "loss": round(loss.item(), 4), **accuracy()})
            t0 = time.time() - train_s  # evaluation time is not training time
            print(json.dumps(curve[-1]), flush=True)
    out = {"args": vars(a), "chance": {e: round(1 / len(names[e]), 3) for e in elements}, "curve": curve}
    print(json.dumps(out))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
