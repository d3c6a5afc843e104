"""Can the tiny language model learn the *matching* step of the CoT at all, and how fast? A text-only probe.

The scoring lines of a predict-then-assess response ("Image A(5) - Art Deco, preferred;") are a pure text
function of what the response already wrote: the two profile blocks and the candidates' terms ("Image A
shows: ..."). This probe trains the language model of a tiny checkpoint on the responses alone (no images:
the profile and candidate terms are unpredictable there and only add noise; the scores are not) with a plain
PyTorch loop, and reports the teacher-forced accuracy of the score digits and the answer on held-out
responses every ``--eval-every`` steps. It separates "the model cannot learn to compare terms" from "the
vision is wrong" and from "the CoT stage is too short".

    python research/match_probe.py --model outputs/models/tiny-qwen2_5_vl --steps 600
    python research/match_probe.py --model outputs/models/tiny-qwen2_5_vl --steps 600 --lr 1e-3 --batch 32
    python research/match_probe.py --sections-only --eval-sections --steps 2000   # the check drill: ~60-token rows

``check`` is the yes/no of a ``describe_candidates=checks`` note; ``score`` the per-element score digits.

Prints one line per evaluation and a final JSON line (``--json`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.cot_probe import spans  # noqa: E402
from preferthinker.data.loading import image_root_for, section_chunks  # noqa: E402
from preferthinker.data.schema import load_train_jsonl  # noqa: E402
from preferthinker.modeling import load_model_and_processor  # noqa: E402


def encode(tok, response: str) -> tuple[list[int], list[tuple[str, int]]]:
    """Token ids of the response (+ eos) and the (kind, token index) of each probed span."""
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    marks = []
    for kind, start, _end, _element in spans(response):
        k = next((i for i, (a, b) in enumerate(offsets) if a <= start < b), None)
        if k is not None and kind in ("score", "answer", "note_liked", "note_disliked", "check"):
            marks.append((kind, k))
    return ids + [tok.eos_token_id], marks


def batches(items, batch, pad, rng):
    while True:
        rng.shuffle(items)
        for i in range(0, len(items) - batch + 1, batch):
            chunk = items[i:i + batch]
            n = max(len(c[0]) for c in chunk)
            x = torch.full((len(chunk), n), pad)
            mask = torch.zeros((len(chunk), n), dtype=torch.long)
            for j, (ids, _) in enumerate(chunk):
                x[j, :len(ids)] = torch.tensor(ids)
                mask[j, :len(ids)] = 1
            yield x, mask


@torch.no_grad()
def evaluate(model, items, pad, dev) -> dict:
    model.eval()
    hits: dict[str, list[int]] = {}
    for i in range(0, len(items), 32):
        chunk = items[i:i + 32]
        n = max(len(c[0]) for c in chunk)
        x = torch.full((len(chunk), n), pad)
        mask = torch.zeros_like(x)
        for j, (ids, _) in enumerate(chunk):
            x[j, :len(ids)] = torch.tensor(ids)
            mask[j, :len(ids)] = 1
        pred = model(input_ids=x.to(dev), attention_mask=mask.to(dev)).logits.argmax(-1).cpu()
        for j, (ids, marks) in enumerate(chunk):
            for kind, k in marks:
                hits.setdefault(kind, []).append(int(pred[j, k - 1] == ids[k]))
    model.train()
    return {k: round(sum(v) / len(v), 4) for k, v in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="outputs/models/tiny-qwen2_5_vl", help="tiny checkpoint (its language model and tokenizer)")
    ap.add_argument("--data", default="data/synthetic/train/sft.jsonl")
    ap.add_argument("--heldout", type=int, default=200, help="responses held out for evaluation (the file's first ones)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--sections-only", action="store_true",
                    help="train on the per-element sections alone (note line + two score lines, ~45 tokens each; "
                         "describe_candidates=checks or sections data), evaluate on the whole held-out responses")
    ap.add_argument("--eval-sections", action="store_true",
                    help="evaluate on the held-out responses' sections (note + two score lines) instead of whole responses")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    path = Path(args.data)
    responses = [r.response for r in load_train_jsonl(path, image_root_for(path, None)) if r.response]
    model, processor = load_model_and_processor(args.model, dtype="fp32", attn_implementation="sdpa", for_training=True, device=args.device)
    dev = torch.device(args.device)
    tok = processor.tokenizer
    items = [encode(tok, r) for r in responses]
    test, train = items[: args.heldout], items[args.heldout:]
    if args.sections_only or args.eval_sections:
        chunks = [[c for c in section_chunks(r)] for r in responses]
        if not any(chunks):
            sys.exit(f"{path}: no section notes; make the data with describe_candidates=checks or sections")
        if args.sections_only:
            train = [(tok(c, add_special_tokens=False)["input_ids"], []) for cs in chunks[args.heldout:] for c in cs]
        if args.eval_sections:
            test = [encode(tok, c) for cs in chunks[: args.heldout] for c in cs]
    pad = tok.pad_token_id
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    stream = batches(list(train), args.batch, pad, random.Random(args.seed))
    curve, t0 = [], time.time()
    for step in range(1, args.steps + 1):
        x, mask = next(stream)
        x, mask = x.to(dev), mask.to(dev)
        labels = x.masked_fill(mask == 0, -100)
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 or step == args.steps:
            acc = evaluate(model, test, pad, dev)
            curve.append({"step": step, "s": round(time.time() - t0, 1), "loss": round(loss.item(), 4), **acc})
            print(json.dumps(curve[-1]), flush=True)
    out = {"model": args.model, "data": str(path), "device": args.device, "sections_only": args.sections_only, "eval_sections": args.eval_sections, "train_items": len(train), "steps": args.steps, "batch": args.batch,
           "lr": args.lr, "curve": curve}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
