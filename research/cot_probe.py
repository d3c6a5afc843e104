"""Which step of the predict-then-assess response does an SFT checkpoint get right? A teacher-forced probe.

Feeds held-out samples (prompt + images + the teacher's response) through a checkpoint once and reports the
argmax accuracy of the first token of each span of the response, by kind:

* ``pref_term`` / ``nonpref_term``: a term of the preference / non-preference profile (vision: read the
  references and pool them);
* ``shows_term``: a candidate's term in the "Image A shows: ..." line or a section note (vision: read one
  candidate);
* ``check``: a yes/no of a ``checks`` note ("A shows Teal; liked Teal yes; disliked Violet no."): is the profile
  term just written the candidate's term (matching, a few tokens apart);
* ``score``: a per-element score digit "Image A(5)" (matching: compare the candidate's term, already written,
  with the two profiles, also written);
* ``answer``: the "A"/"B" of the answer (given the totals);

plus, for the scores, the distribution of predicted digits (a model that writes 5 everywhere shows it at
once). Teacher forcing isolates each step: every span is predicted from a correct prefix, so a low
``score`` accuracy means the matching step is not learnt even when the terms are right.

    python research/cot_probe.py outputs/sft/<run>/final                       # 64 held-out training users
    python research/cot_probe.py outputs/sft/<run>/final --data data/synthetic/train/sft.jsonl --n 64 --json out.json

The samples are the first ``--n`` records of the file: with the default ``data.val_samples=64`` these are the
users the SFT run held back for its eval loss.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preferthinker.data.loading import PromptSpec, image_root_for, sample_inputs  # noqa: E402
from preferthinker.data.schema import load_train_jsonl  # noqa: E402
from preferthinker.modeling import load_model_and_processor  # noqa: E402
from preferthinker.profile import ELEMENTS  # noqa: E402

_BLOCK = re.compile(r"<(visual (?:non-)?preference profile)>(.*?)</\1>", re.S)
_VALUE = re.compile(r'"[^"]+":\s*"([^"]*)"')
_SHOWS = re.compile(r"Image [AB] shows: ([^\n]*)\.")
_NOTE = re.compile(r"^liked (.+?); disliked (.+?); A shows (.+?); B shows (.+?)\.$", re.M)  # describe_candidates=sections
_CHECK = re.compile(r"\b[AB] shows ([^;\n]+); liked ([^;\n]+); disliked ([^;\n]+) (?:yes|no)\.")  # describe_candidates=checks
_YESNO = re.compile(r"(?<= )(yes|no)\b")
_SCORE = re.compile(r"Image [AB]\((\d)\)")
_ANSWER = re.compile(r"<answer>Image ([AB])</answer>")


def spans(response: str) -> list[tuple[str, int, int, int | None]]:
    """(kind, start, end, element index or None) character spans of the response worth probing."""
    out = []
    for m in _BLOCK.finditer(response):
        kind = "nonpref_term" if m.group(1).startswith("visual non") else "pref_term"
        for e, v in enumerate(_VALUE.finditer(m.group(2))):
            out.append((kind, m.start(2) + v.start(1), m.start(2) + v.end(1), e))
    for m in _SHOWS.finditer(response):
        pos = m.start(1)
        for e, term in enumerate(m.group(1).split(", ")):
            out.append(("shows_term", pos, pos + len(term), e))
            pos += len(term) + 2
    for e, m in enumerate(_NOTE.finditer(response)):
        out += [("note_liked", m.start(1), m.end(1), e), ("note_disliked", m.start(2), m.end(2), e)]
        out += [("shows_term", m.start(g), m.end(g), e) for g in (3, 4)]
    for i, m in enumerate(_CHECK.finditer(response)):
        e = i // 2
        out.append(("shows_term", m.start(1), m.end(1), e))
        for liked in re.finditer(r"([^,]+?) (?:yes|no)(?:, |$)", m.group(2)):
            out.append(("note_liked", m.start(2) + liked.start(1), m.start(2) + liked.end(1), e))
        out.append(("note_disliked", m.start(3), m.end(3), e))
        out += [("check", m.start(0) + w.start(1), m.start(0) + w.end(1), e) for w in _YESNO.finditer(m.group(0))]
    out += [("score", m.start(1), m.end(1), i // 2) for i, m in enumerate(_SCORE.finditer(response))]
    out += [("answer", m.start(1), m.end(1), None) for m in _ANSWER.finditer(response)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="checkpoint folder (HF format)")
    ap.add_argument("--data", default="data/synthetic/train/sft.jsonl", help="official-schema JSONL with CoT responses")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--style", default="compact")
    ap.add_argument("--system", default="compact")
    ap.add_argument("--pixels", type=int, default=56 * 56, help="image size bound (height*width), as the run's model.min/max_pixels")
    ap.add_argument("--json", default=None, help="also write the summary here")
    args = ap.parse_args()

    path = Path(args.data)
    records = [r for r in load_train_jsonl(path, image_root_for(path, None)) if r.response][: args.n]
    if not records:
        sys.exit(f"{path}: no record with a response")
    model, processor = load_model_and_processor(args.model, dtype="fp32", attn_implementation="sdpa")
    model.eval()
    spec = PromptSpec(style=args.style, system=args.system, min_pixels=args.pixels, max_pixels=args.pixels)
    tok = processor.tokenizer
    hits: dict[str, list[int]] = {}
    score_pred, score_true = Counter(), Counter()
    for rec in records:
        messages, images = sample_inputs(rec, image_root_for(path, None), spec)
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = processor(text=[prompt + rec.response + "<|im_end|>\n"], images=images, return_tensors="pt")
        n_prompt = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1]
        resp = tok(rec.response, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"][0]
        if ids[n_prompt:n_prompt + len(resp["input_ids"])].tolist() != resp["input_ids"]:
            sys.exit("the response tokenises differently inside the chat template; the probe cannot align spans")
        with torch.no_grad():
            pred = model(**enc).logits[0].argmax(-1)
        offsets = resp["offset_mapping"]
        for kind, start, _end, e in spans(rec.response):
            k = next((i for i, (a, b) in enumerate(offsets) if a <= start < b), None)
            if k is None:
                continue
            p = int(pred[n_prompt + k - 1])
            hits.setdefault(kind, []).append(int(p == resp["input_ids"][k]))
            if e is not None and kind != "score":
                hits.setdefault(f"{kind}/{ELEMENTS[e]}", []).append(int(p == resp["input_ids"][k]))
            if kind == "score":
                score_pred[tok.decode([p]).strip()] += 1
                score_true[tok.decode([resp["input_ids"][k]]).strip()] += 1
    summary = {
        "model": args.model, "data": str(path), "samples": len(records),
        "accuracy": {k: round(sum(v) / len(v), 4) for k, v in hits.items()},
        "spans": {k: len(v) for k, v in hits.items()},
        "score_predicted": dict(score_pred.most_common()), "score_true": dict(score_true.most_common()),
    }
    for k, v in summary["accuracy"].items():
        print(f"{k:>13}: {100 * v:5.1f} %  ({summary['spans'][k]} spans)")
    print("score digits predicted:", summary["score_predicted"], " true:", summary["score_true"])
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
