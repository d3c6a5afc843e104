"""Where a checkpoint's compact CoT goes wrong, section by section, from saved eval predictions.

For every element section of every unswapped response (``describe_candidates=checks`` notes:
``A shows T; liked P1 yes|no, P2 yes|no; disliked N yes|no. B shows ...``) it counts:

* copy: the liked/disliked terms written in the note differ from the profile the same response predicted above it
  (the model failed to copy its own profile);
* check: a yes/no that contradicts the terms written next to it (``T`` equal to the liked term but ``no``, ...);
* score: the score line that does not follow from the written yes/no (5 for a liked match, 1 for a disliked one,
  else 3), and, against the truth, the score that differs from the true score of that candidate on that element.

    python research/section_errors.py outputs/pipeline/vit/eval/predictions/extra_SFT
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NOTE = re.compile(r"(?P<side>[AB]) shows (?P<term>[^;]+); liked (?P<liked>[^;]+); disliked (?P<dis>[^.]+)\.")
SCORE = re.compile(r"Image (?P<side>[AB])\((?P<score>\d)\)")
ITEM = re.compile(r"^(?P<term>.+) (?P<yn>yes|no)$")


def _items(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(", "):
        m = ITEM.match(part.strip())
        if m:
            out.append((m["term"].strip(), m["yn"]))
    return out


def sections(raw: str) -> list[str]:
    body = raw.split("<think>", 1)[-1].split("Total:", 1)[0]
    return [s for s in re.split(r"\n\s*\d+\. [^\n]*:\n", body) if "shows" in s]


def analyse(records: list[dict]) -> Counter:
    from preferthinker.profile import ELEMENTS, split_terms

    c: Counter = Counter()
    for r in records:
        if r.get("swapped") or not r.get("raw"):
            continue
        secs = sections(r["raw"])
        pred_p, pred_n = r.get("pred_preference") or {}, r.get("pred_non_preference") or {}
        for k, (elem, sec) in enumerate(zip(ELEMENTS, secs)):
            c["sections"] += 1
            notes = {m["side"]: m for m in NOTE.finditer(sec)}
            scores = {m["side"]: int(m["score"]) for m in SCORE.finditer(sec)}
            for side in "AB":
                m = notes.get(side)
                if m is None:
                    c["unparsed note"] += 1
                    continue
                c["notes"] += 1
                liked, dis = _items(m["liked"]), _items(m["dis"])
                if [t for t, _ in liked] != split_terms(str(pred_p.get(elem) or "")) or [t for t, _ in dis] != split_terms(str(pred_n.get(elem) or "")):
                    c["copy: terms differ from the predicted profile"] += 1
                term = m["term"].strip()
                if any((t == term) != (yn == "yes") for t, yn in liked + dis):
                    c["check: yes/no contradicts the written terms"] += 1
                want = 5 if any(yn == "yes" for _, yn in liked) else (1 if any(yn == "yes" for _, yn in dis) else 3)
                if side in scores and scores[side] != want:
                    c["score: does not follow the written yes/no"] += 1
                truth = (r.get("true_scores_a") if side == "A" else r.get("true_scores_b")) or []
                if side in scores and k < len(truth) and scores[side] != int(truth[k]):
                    c["score: differs from the truth"] += 1
    return c


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", type=Path, help="a predictions/<system>/ folder written by scripts/eval.py")
    args = ap.parse_args(argv)
    out = {}
    for f in sorted(args.predictions.glob("*.jsonl")):
        recs = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        c = analyse(recs)
        out[f.name.split(".")[0]] = dict(c)
        n = max(c["notes"], 1)
        print(f"{f.name.split('.')[0]}: {c['sections']} sections, {c['notes']} candidate notes")
        for key, v in sorted(c.items()):
            if key not in ("sections", "notes"):
                print(f"  {key}: {v} ({100 * v / n:.1f} % of notes)")
    return out


if __name__ == "__main__":
    main()
