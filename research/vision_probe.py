"""How fast does a tiny Qwen2.5-VL learn to *see* the synthetic elements? A vision-learnability probe.

Trains a freshly initialised tiny model (sizes from the flags) on single-image rows only
("Describe the visual profile of this image." -> "This image shows: <5 terms>.") with a plain PyTorch
loop, and reports teacher-forced per-element term accuracy on held-out bench images (the SP_ID
candidates) every ``--eval-every`` steps. It isolates the question the SFT default depends on: can the
vision tower, trained from scratch in a few CPU minutes, tell the terms apart at all, and which sizes
(ViT depth/width, patch size, image side) make it learn faster per second of CPU.

    python research/vision_probe.py --steps 300                         # the default tiny sizes
    python research/vision_probe.py --steps 300 --vision-depth 4 --vision-hidden 128 --patch 7 --merge 4
    python research/vision_probe.py --init outputs/pipeline/main5/align/final --steps 0   # measure a checkpoint

Prints one line per evaluation and a final JSON line (``--json`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preferthinker.data.loading import alignment_prompt, alignment_target  # noqa: E402
from preferthinker.data.schema import default_image_root, load_bench, load_train_jsonl  # noqa: E402
from preferthinker.profile import ELEMENTS  # noqa: E402
from preferthinker.prompting import load_image, system_prompt  # noqa: E402


def items_of(records, image_root: Path, train: bool) -> list[tuple[Path, dict]]:
    out = []
    for rec in records:
        for rel, key in ((rec.image_a, "true_profile_a"), (rec.image_b, "true_profile_b")):
            if isinstance(rec.extra.get(key), dict):
                out.append((image_root / rel, rec.extra[key]))
        if train:
            refs = rec.extra.get("reference_profiles") or {}
            for side, paths in (("preferred", rec.preferred), ("non_preferred", rec.non_preferred)):
                for p, q in list(zip(paths, refs.get(side) or [], strict=False))[:1]:
                    out.append((image_root / p, q))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--tokenizer", default="outputs/models/tiny-qwen2_5_vl", help="a tiny checkpoint dir whose tokenizer/processor to reuse")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vision-lr", type=float, default=None, help="learning rate of the vision tower (default: --lr)")
    ap.add_argument("--first-only", default=None, help="comma-separated elements (e.g. Detail or \"Art Styles,Detail\") that the "
                    "rows of the first --first-steps steps name alone (\"This image shows: Fine.\", as data.align_elements=[Detail]): "
                    "a curriculum before the five-term rows; with --steps 0, the elements a checkpoint is measured on alone")
    ap.add_argument("--first-steps", type=int, default=0)
    ap.add_argument("--vision-depth", type=int, default=2)
    ap.add_argument("--vision-hidden", type=int, default=64)
    ap.add_argument("--vision-mlp", type=int, default=0, help="ViT MLP width (0: 2x hidden)")
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--merge", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=56)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--init", default=None, help="start from this checkpoint's weights (its ViT sizes; the size flags are ignored)"
                    "; with --steps 0 it only measures how well the checkpoint reads single images")
    ap.add_argument("--system", default=None, help="system prompt style of the rows (as the run's prompt.system; "
                    "default: none for a fresh model, compact with --init, as the SFT alignment rows)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    first = [e.strip() for e in (a.first_only or "").split(",") if e.strip()] or None
    bad = [e for e in first or () if e not in ELEMENTS]
    if bad:
        ap.error(f"--first-only: {bad} are not profile elements; choose from {list(ELEMENTS)}")
    if a.system is None:
        a.system = "compact" if a.init else ""
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)

    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    px = a.image_size * a.image_size
    if a.init:
        processor = AutoProcessor.from_pretrained(a.init)
        processor.image_processor.min_pixels = processor.image_processor.max_pixels = px
        processor.image_processor.size = {"shortest_edge": px, "longest_edge": px}
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(a.init, dtype=torch.float32)
    else:
        processor = AutoProcessor.from_pretrained(a.tokenizer)
        processor.image_processor = Qwen2VLImageProcessor(size={"shortest_edge": px, "longest_edge": px}, patch_size=a.patch,
                                                          merge_size=a.merge, temporal_patch_size=2)
        cfg = AutoConfig.from_pretrained(a.tokenizer)
        v = cfg.vision_config
        v.depth, v.hidden_size, v.num_heads = a.vision_depth, a.vision_hidden, max(1, a.vision_hidden // 16)
        v.intermediate_size = a.vision_mlp or 2 * a.vision_hidden
        v.patch_size, v.spatial_merge_size = a.patch, a.merge
        v.window_size = a.patch * a.merge * 4
        v.fullatt_block_indexes = [a.vision_depth - 1]
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    n_vis = sum(p.numel() for p in model.model.visual.parameters())

    root = Path(a.data)
    train_recs = load_train_jsonl(root / "train" / "sft.jsonl", root / "train" / "images")
    bench_json = root / "data" / "SP_ID" / "SP_ID.json"
    eval_items = items_of(load_bench(bench_json), default_image_root(bench_json), train=False)[: a.eval_n]
    train_items = items_of(train_recs, root / "train" / "images", train=True)
    cache: dict = {}

    def img(p: Path):
        if p not in cache:
            cache[p] = load_image(p, px, px)
        return cache[p]

    tok = processor.tokenizer

    def batch_of(items, only=None):
        texts, images, targets = [], [], []
        for p, prof in items:
            msgs = [{"role": "system", "content": [{"type": "text", "text": system_prompt(a.system)}]}] if a.system else []
            msgs += [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": alignment_prompt(only)}]}]
            prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            target = alignment_target(prof, only) + "<|im_end|>"
            texts.append(prompt + target)
            targets.append(target)
            images.append(img(p))
        enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = torch.full_like(enc["input_ids"], -100)
        spans = []
        for i, t in enumerate(targets):
            n_t = len(tok(t, add_special_tokens=False)["input_ids"])
            L = int(enc["attention_mask"][i].sum())
            labels[i, L - n_t:L] = enc["input_ids"][i, L - n_t:L]
            spans.append((L - n_t, L))
        return enc, labels, spans

    tok.padding_side = "right"
    vis = {id(p) for p in model.model.visual.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in vis]},
              {"params": list(model.model.visual.parameters()), "lr": a.vision_lr or a.lr}]
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, a.steps // 20)))

    # per-element token spans inside the target for teacher-forced accuracy
    def element_acc(items, only=None) -> dict:
        model.eval()
        correct = {e: 0 for e in ELEMENTS}
        n = 0
        with torch.no_grad():
            for i in range(0, len(items), 64):
                chunk = items[i:i + 64]
                enc, labels, spans = batch_of(chunk, only)
                logits = model(**enc).logits
                pred = logits[:, :-1].argmax(-1)
                gold = enc["input_ids"][:, 1:]
                for j, (p, prof) in enumerate(chunk):
                    s, e_ = spans[j]
                    # locate each term's tokens by re-tokenising prefixes of the target
                    head = "This image shows:"
                    pos = len(tok(head, add_special_tokens=False)["input_ids"])
                    asked = only or ELEMENTS
                    for k, el in enumerate(asked):
                        upto = head + " " + ", ".join(prof[x] for x in asked[: k + 1])
                        end = len(tok(upto, add_special_tokens=False)["input_ids"])
                        correct[el] += bool((pred[j, s + pos - 1:s + end - 1] == gold[j, s + pos - 1:s + end - 1]).all())
                        pos = end
                    n += 1
        model.train()
        return {e: round(correct[e] / max(n, 1), 3) for e in (only or ELEMENTS)}

    print(f"params {n_params:,} (vision {n_vis:,}); train images {len(train_items)}, eval images {len(eval_items)}", flush=True)
    t0 = time.time()
    curve = []
    if a.steps == 0:
        curve.append({"step": 0, "train_s": 0.0, **element_acc(eval_items, first)})
        print(json.dumps(curve[-1]), flush=True)
    rng = random.Random(a.seed)
    for step in range(1, a.steps + 1):
        chunk = rng.sample(train_items, a.batch)
        only = first if step <= a.first_steps else None
        enc, labels, _ = batch_of(chunk, only)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % a.eval_every == 0 or step == a.steps:
            train_s = time.time() - t0
            acc = element_acc(eval_items, only)
            t0 += time.time() - t0 - train_s  # do not count eval time
            curve.append({"step": step, "train_s": round(train_s, 1), "loss": round(loss.item(), 4), **acc})
            print(json.dumps(curve[-1]), flush=True)
    out = {"args": vars(a), "params": n_params, "vision_params": n_vis, "curve": curve}
    print(json.dumps(out))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
