"""What the web demo computes, without Gradio: uploads in, page sections out (so it is testable alone).

One click runs ``Assessor.rank`` on the uploaded candidates: every pair in both orders, which for two
candidates is exactly ``assess`` with its probability. The page shows

* the predicted preference / non-preference profile (from the first readable response),
* each candidate's per-element scores with the model's rationales,
* the verdict on the first two candidates (Image A = candidate 1, Image B = candidate 2) with
  P(Image A preferred), and
* the ranking with each candidate's mean probability of being preferred.

Every input problem (no file on a side, one candidate, a non-image, a corrupt or oversized file, too
many candidates) becomes a sentence in ``status``; nothing raises to the page.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preferthinker.profile import ELEMENTS

log = logging.getLogger("preferthinker.demo")

DEMO_MAX_CANDIDATES = 6  # 30 generations: about what a CPU answers while a person waits


@dataclass
class DemoResult:
    """The page sections: ``status`` (an error or a one-line summary), markdown for the verdict and the
    per-candidate scores, and table rows for the profile and the ranking."""

    status: str
    verdict: str = ""
    profile_rows: list[list[str]] = field(default_factory=list)
    scores: str = ""
    ranking_rows: list[list[Any]] = field(default_factory=list)
    gallery: list[tuple[str, str]] = field(default_factory=list)  # (image path, caption), best first
    ok: bool = False


def _path_of(upload: Any) -> str:
    """Gradio hands uploads as paths (str) or objects with ``.name`` / ``path`` depending on the version."""
    if isinstance(upload, (str, os.PathLike)):
        return os.fspath(upload)
    if isinstance(upload, dict) and "path" in upload:
        return str(upload["path"])
    for attr in ("path", "name"):
        if isinstance(getattr(upload, attr, None), str):
            return getattr(upload, attr)
    raise ValueError(f"unrecognised upload object {type(upload).__name__}")


def _display(path: str) -> str:
    return Path(path).name


def check_uploads(files: Sequence[Any] | None, what: str, max_bytes: int) -> list[str]:
    """Paths of one upload box, or ValueError with a sentence for the page."""
    paths = [_path_of(f) for f in (files or [])]
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"{what}: the upload {_display(p)} did not arrive; please upload it again")
        size = os.path.getsize(p)
        if size > max_bytes:
            raise ValueError(f"{what}: {_display(p)} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB per file")
    return paths


def _cell(x: Any) -> str:
    return "-" if x is None else str(x)


def _md(text: Any) -> str:
    """Model text and notes shown as Markdown: "<answer>" must stay visible, not become an HTML tag."""
    return " ".join(_cell(text).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")


def _profile_rows(ranking) -> list[list[str]]:
    for c in ranking.comparisons:
        a = c.assessment
        if a.preference or a.non_preference:
            return [[e, _cell((a.preference or {}).get(e)), _cell((a.non_preference or {}).get(e))] for e in ELEMENTS]
    return [[e, "-", "-"] for e in ELEMENTS]


def _scores_markdown(ranking, names: Sequence[str]) -> str:
    """Per candidate: the scores and rationales the model wrote for it in its first readable comparison."""
    parts = []
    for i, name in enumerate(names):
        found = None
        for c in ranking.comparisons:
            x = c.assessment
            if i in (c.a, c.b):
                scores, why = (x.scores_a, x.rationales_a) if i == c.a else (x.scores_b, x.rationales_b)
                if scores:
                    found = (scores, why or [None] * len(ELEMENTS))
                    break
        parts.append(f"**Candidate {i + 1}: {_md(name)}**\n")
        if found is None:
            parts.append("_the model wrote no readable scores for this candidate_\n")
            continue
        parts.append("| Element | Score | Rationale |\n|---|---:|---|")
        parts += [f"| {e} | {s} | {_md(w)} |" for e, s, w in zip(ELEMENTS, *found, strict=False)]
        parts.append(f"| **Total** | **{sum(found[0])}** | |\n")
    return "\n".join(parts)


def _verdict_markdown(ranking, names: Sequence[str]) -> str:
    first = next((c for c in ranking.comparisons if (c.a, c.b) == (0, 1)), None)
    p = next((pw["probability"] for e in ranking if e.index == 0 for pw in e.pairwise if pw["opponent_index"] == 1), None)
    answer = first.assessment.answer if first else None
    how = "calibrated" if ranking.calibrated else "uncalibrated: the checkpoint has no calibration.json"
    lines = [f"**Verdict** (Image A = {_md(names[0])}, Image B = {_md(names[1])}): "
             + (f"**{answer}**" if answer else "_no readable answer_")]
    if p is not None:
        lines.append(f"P(Image A preferred) = **{p:.2f}** ({how}; both candidate orders)")
    return "\n\n".join(lines)


def run_demo(assessor, liked: Sequence[Any] | None, disliked: Sequence[Any] | None, candidates: Sequence[Any] | None,
             *, max_upload_mb: float = 20.0, max_candidates: int = DEMO_MAX_CANDIDATES) -> DemoResult:
    """Everything the page shows for one click; input problems come back as ``DemoResult.status``."""
    from preferthinker.runtime import user_errors

    max_bytes = int(max_upload_mb * 2**20)
    try:
        liked_p = check_uploads(liked, "Liked references", max_bytes)
        disliked_p = check_uploads(disliked, "Disliked references", max_bytes)
        cand_p = check_uploads(candidates, "Candidates", max_bytes)
        if not liked_p or not disliked_p:
            missing = " and ".join(w for w, ps in (("liked", liked_p), ("disliked", disliked_p)) if not ps)
            raise ValueError(f"Please add at least one {missing} reference image: the model needs both sides of the user's taste.")
        if len(cand_p) < 2:
            raise ValueError(f"Please add two or more candidate images to compare (got {len(cand_p)}).")
        if len(cand_p) > max_candidates:
            raise ValueError(f"{len(cand_p)} candidates would need {len(cand_p) * (len(cand_p) - 1)} generations; the demo takes "
                             f"at most {max_candidates}. Use `preferthinker rank` for larger sets.")
        names = [_display(p) for p in cand_p]
        ranking = assessor.rank(liked_p, disliked_p, cand_p, max_candidates=max_candidates)
    except (ValueError, *user_errors()) as e:  # ImageLoadError, AssessInputError: a sentence naming the file
        return DemoResult(status=f"⚠️ {_md(e)}")
    except Exception as e:  # noqa: BLE001 - the page must never show a traceback; the log keeps it
        log.exception("demo request failed")
        return DemoResult(status=f"⚠️ Something went wrong while assessing ({type(e).__name__}); see the server log.")
    rows = [[e.rank, names[e.index], f"{e.wins:g}/{len(names) - 1}", None if e.probability is None else round(e.probability, 3),
             None if e.mean_total is None else round(e.mean_total, 1)] for e in ranking]
    t = ranking.timing
    status = (f"Assessed {len(names)} candidates: {t.get('generations', 0)} generations, {t.get('pairs_per_s', 0):.2f} pairs/s."
              + ("" if not ranking.notes else " Notes: " + _md("; ".join(ranking.notes))))
    return DemoResult(status=status, verdict=_verdict_markdown(ranking, names), profile_rows=_profile_rows(ranking),
                      scores=_scores_markdown(ranking, names), ranking_rows=rows, ok=True,
                      gallery=[(cand_p[e.index], f"#{e.rank} {names[e.index]}" + ("" if e.probability is None else f"  P(win) {e.probability:.2f}"))
                               for e in ranking])
