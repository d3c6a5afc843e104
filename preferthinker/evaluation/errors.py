"""Failed samples of an evaluation: their reasons, grouped, and the gate that refuses an accuracy measured
over a run of errors (a hub snapshot whose images could not be read once scored 0 % and exited 0)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from preferthinker.runtime import ConfigError

# Parts of an error message that differ between samples of the same problem: where it happened
# ("SP_ID record 12: field imageA (a/b.png)"), paths and quoted values, numbers.
_WHERE = re.compile(r"^.*?record \d+:\s*")
_FIELD = re.compile(r"field '?([A-Za-z_]+)(\[\d+\])?'?( \([^)]*\))?")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*/)+[\w.@~-]*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")


def error_reason(message: str) -> str:
    """The sample-independent part of an error message, so that equal problems count together:
    "SP_ID record 3: field imageA (x/a.png): file does not exist: /b/x/a.png" -> "field imageA: file does not exist: <path>"."""
    text = _WHERE.sub("", message.strip().splitlines()[0] if message.strip() else "unknown error")
    text = _FIELD.sub(lambda m: f"field {m.group(1)}", text)
    text = _PATH.sub("<path>", text)
    text = _QUOTED.sub("<value>", text)
    return _NUMBER.sub("N", text).strip()


def error_summary(records: Mapping[str, Sequence[dict]], top: int = 5) -> dict:
    """{n, n_errors, rate, reasons: [{reason, count, example}]} over every subset's prediction records
    (both orientations), the ``top`` most common reasons first."""
    rows = [r for recs in records.values() for r in recs]
    errors = [str(r["error"]) for r in rows if r.get("error")]
    counts = Counter(error_reason(e) for e in errors)
    example = {}
    for e in errors:
        example.setdefault(error_reason(e), e)
    return {
        "n": len(rows), "n_errors": len(errors), "rate": round(len(errors) / len(rows), 4) if rows else 0.0,
        "reasons": [{"reason": r, "count": c, "example": example[r]} for r, c in counts.most_common(top)],
    }


class EvaluationFailed(ConfigError):
    """More samples failed than ``bench.max_error_rate`` allows. The message lists the top reasons with counts.
    A ConfigError so that the entry point reports it as one message and exits 2 (the input is at fault)."""

    def __init__(self, failed: Mapping[str, dict], max_rate: float, run_dir: Path):
        lines = [f"evaluation failed: more than {max_rate:.1%} of the samples could not be scored "
                 f"(predictions and reports are kept in {run_dir}; fix the data and rerun with run_dir={run_dir} to resume)"]
        for system, e in failed.items():
            lines.append(f"  {system}: {e['n_errors']} of {e['n']} samples failed ({e['rate']:.1%}); most common reasons:")
            lines += [f"    {r['count']:>6} x {r['reason']}\n           e.g. {r['example']}" for r in e["reasons"]]
        self.failed = dict(failed)
        super().__init__("\n".join(lines))
