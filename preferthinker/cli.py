"""``preferthinker`` command line: assess, rank, profile, serve, validate-data.

    preferthinker assess --model CKPT --liked likes/ --disliked dislikes/ a.png b.png [--json]
    preferthinker rank   --model CKPT --liked likes/ --disliked dislikes/ --candidates outs/ [--top-k 3] [--out r.csv]
    preferthinker serve  --model CKPT [--port 7860]   # local web demo (pip install -e ".[demo]")
    preferthinker profile --model CKPT --liked likes/ --disliked dislikes/ [--json]
    preferthinker validate-data data/synthetic/data/SP_ID/SP_ID.json

Input errors (missing or unreadable images, a folder without images, a path that is not a checkpoint, a
malformed data file) print one ``error: ...`` line and exit with code 2; ``--debug`` (or PT_DEBUG=1)
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import re
import shutil
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  # compare two images for a user given by folders of liked and disliked images
  preferthinker assess --model outputs/sft/<run>/final --liked likes/ --disliked dislikes/ a.png b.png
  # references as single files (repeat the flag) or a quoted glob; JSON output
  preferthinker assess --model CKPT --liked l1.png --liked l2.png --disliked 'dislikes/*.jpg' a.png b.png --json
  # a benchmark record supplies the references and the pair (and its label is shown)
  preferthinker assess --model latest --record data/synthetic/data/SP_ID/SP_ID.json:0
  # best-of-N: rank text-to-image outputs for the user (every pair in both orders), keep the best 2
  preferthinker rank --model CKPT --liked likes/ --disliked dislikes/ --candidates 'outs/*.png' --top-k 2 --out best.csv
  # the local web demo (offline; needs the [demo] extra)
  preferthinker serve --model CKPT --port 7860
  # the user's predicted preference / non-preference profile
  preferthinker profile --model CKPT --liked likes/ --disliked dislikes/
  # check a data file against the official schema (and that every image exists)
  preferthinker validate-data data/synthetic/train/sft.jsonl

--model latest (the default) is the newest finished SFT or GRPO checkpoint under ./outputs (latest_sft,
latest_grpo: of that kind; the rule GRPO and eval use). A folder passed to --liked or
--disliked contributes its image files sorted by name; repeat the flag for several files or folders.
"""


class CLIError(Exception):
    """A problem with the command line's inputs, reported as ``error: <message>`` with exit code 2."""


# --------------------------------------------------------------------------------------------------
# parser


def _add_model_options(p: argparse.ArgumentParser, *, references: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="latest", metavar="CKPT",
                   help="checkpoint folder (a run's final/, a checkpoint-N, a LoRA adapter, any Qwen2.5-VL); "
                        "'latest' = newest finished run under ./outputs (default)")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32, checkpoint (default: auto)")
    g.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="generation budget per response (default: 512 compact prompt, 4096 official prompt)")
    g.add_argument("--repetition-penalty", type=float, default=None, metavar="X",
                   help="default 1.0 for PreferThinker runs, 1.15 (official eval) for checkpoints without a record")
    g.add_argument("--batch-size", type=int, default=8, metavar="N", help="prompts per generate() call (default: 8)")
    g.add_argument("--style", choices=("official", "compact"), default=None,
                   help="prompt style (default: what the checkpoint was trained with, else official)")
    g.add_argument("--system", default=None, help="system prompt: official, compact or none (default: as trained)")
    if references:
        r = p.add_argument_group("the user")
        r.add_argument("--liked", action="append", default=[], metavar="PATH",
                       help="a liked reference: image file, folder of images or quoted glob; repeat for more")
        r.add_argument("--disliked", action="append", default=[], metavar="PATH",
                       help="a disliked reference: image file, folder of images or quoted glob; repeat for more")
        r.add_argument("--record", metavar="FILE[:INDEX]",
                       help="take the references (and, for assess, the pair) from record INDEX (default 0) of a "
                            "bench JSON or training JSONL; --liked/--disliked replace its references")
        r.add_argument("--max-refs", type=int, default=None, metavar="N",
                       help="references used per side; extra ones are ignored with a note (default: as trained, 5)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    o.add_argument("--show-raw", action="store_true", help="also print the model's raw response text")
    o.add_argument("--verbose", action="store_true", help="show loading logs and library warnings")
    o.add_argument("--debug", action="store_true", help="show tracebacks for input errors")


def _add_retry_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("no readable answer")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="sampled retries when the greedy response(s) give no readable answer (0..16, default 2); "
                        "the status line / JSON 'status' says which attempt answered")
    g.add_argument("--retry-temperature", type=float, default=0.7, metavar="T", help="sampling temperature of the retries (default 0.7)")
    g.add_argument("--retry-seed", type=int, default=0, metavar="S", help="seed of the retries: the same seed gives the same text (default 0)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="preferthinker", formatter_class=fmt, epilog=EXAMPLES,
        description="Personalized image preference assessment with a PreferThinker (Qwen2.5-VL) checkpoint.",
    )
    from preferthinker import __version__

    parser.add_argument("--version", action="version", version=f"preferthinker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("assess", formatter_class=fmt, epilog=EXAMPLES,
                       help="compare two images for a user: profiles, per-element scores, totals, answer",
                       description="Compare IMAGE_A and IMAGE_B for the user given by liked and disliked reference images.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="IMAGE_A IMAGE_B (omit with --record to use the record's pair)")
    _add_model_options(p)
    _add_retry_options(p)
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("rank", formatter_class=fmt, epilog=EXAMPLES,
                       help="rank N candidate images for a user (position-debiased round robin)",
                       description="Rank candidates for the user: every pair is assessed in both orders (A,B) and (B,A); "
                                   "a candidate's score per pair is the mean of its two win indicators (unreadable = 0.5); "
                                   "candidates are ordered by summed pair scores, then mean total margin, then mean total. "
                                   "N candidates cost N*(N-1) generations.")
    p.add_argument("candidates", nargs="*", metavar="CANDIDATE", help="candidate images (files or folders)")
    p.add_argument("--candidates", dest="candidate_sources", action="append", default=[], metavar="DIR|GLOB",
                   help="a folder of candidate images or a quoted glob ('outs/*.png'); repeat for more")
    p.add_argument("--max-candidates", type=int, default=16, metavar="N",
                   help="refuse more than N candidates (default 16 = 240 generations)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="show and write only the K best candidates")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="also write the ranking to FILE: .csv (rank, candidate, score, probability, rationale) or .json; "
                        "repeat for both")
    _add_model_options(p)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("serve", formatter_class=fmt, epilog=EXAMPLES,
                       help="local web demo: upload references and candidates, see profile, scores, verdict, ranking",
                       description="Serve the web demo on this machine (Gradio, fully offline; pip install -e '.[demo]').")
    g = p.add_argument_group("server")
    g.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860; 0 = any free port)")
    g.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB", help="refuse larger uploads (default 20)")
    _add_model_options(p, references=False)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("profile", formatter_class=fmt, epilog=EXAMPLES,
                       help="predict the user's preference and non-preference profiles",
                       description="Predict the five-element preference and non-preference profiles from the references.")
    _add_model_options(p)
    _add_retry_options(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("validate-data", formatter_class=fmt, epilog=EXAMPLES,
                       help="check a bench JSON / training JSONL against the official schema",
                       description="Load FILE with the official schema loader (bench JSON list, or training JSONL for *.jsonl) "
                                   "and report that every record is valid, or the first error.")
    p.add_argument("file", metavar="FILE", help="bench JSON (data/<SUBSET>/<SUBSET>.json) or training JSONL")
    p.add_argument("--kind", choices=("auto", "bench", "train"), default="auto", help="file kind (default: by suffix)")
    p.add_argument("--image-root", default=None, metavar="DIR", help="image folder (default: images/ beside FILE)")
    p.add_argument("--decode", action="store_true", help="also open and decode every image (slower; finds corrupt files)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False) or os.environ.get("PT_DEBUG") == "1"
    from preferthinker.runtime import tune_allocator

    tune_allocator()  # glibc malloc thresholds for the model's CPU work (runtime.MALLOC_SETTINGS)
    try:
        with _quiet(getattr(args, "verbose", False), models=args.command != "validate-data"):
            return int(args.func(args) or 0)
    except _user_errors() as e:
        if debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from preferthinker.runtime import user_errors

    return (CLIError, ValueError, *user_errors())  # ImageLoadError, SchemaError, AssessInputError are ValueErrors


@contextlib.contextmanager
def _quiet(verbose: bool, models: bool = True):
    """Without --verbose: no library warnings, progress bars or log lines around the result (notes are
    printed with it). Everything is restored afterwards, so in-process callers keep their settings."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        yield
        return
    ours = logging.getLogger("preferthinker")
    level = ours.level
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hf_logging = None
    if models:  # validate-data does not need transformers (and its import time)
        from transformers.utils import logging as hf_logging
    hf_state = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) if hf_logging else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.setLevel(logging.ERROR)
        if hf_logging:
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            ours.setLevel(level)
            if hf_state:
                hf_logging.set_verbosity(hf_state[0])
                if hf_state[1]:
                    hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------------
# inputs


def _expand(paths: Sequence[str], what: str) -> list[str]:
    """Files and folders as given; a pattern with wildcards that is not itself a file is globbed."""
    out: list[str] = []
    for p in paths:
        if not os.path.exists(p) and glob.has_magic(p):
            matches = sorted(glob.glob(os.path.expanduser(p)))
            if not matches:
                raise CLIError(f"{what}: no file matches the pattern {p!r}")
            out += matches
        else:
            out.append(p)
    return out


def _parse_record(spec: str) -> tuple[Path, int]:
    path, index = spec, 0
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        path, index = head, int(tail)
    return Path(path), index


def _load_record(spec: str) -> dict[str, Any]:
    """References, pair and label of one record of a bench JSON / training JSONL (official schema)."""
    from preferthinker.data.schema import default_image_root, load_bench, load_train_jsonl, resolve_image

    path, index = _parse_record(spec)
    if not path.is_file():
        raise CLIError(f"--record: file does not exist: {path}")
    recs = load_train_jsonl(path) if path.suffix == ".jsonl" else load_bench(path)
    if not 0 <= index < len(recs):
        raise CLIError(f"--record: {path} has {len(recs)} records; index {index} is out of range")
    rec, root = recs[index], default_image_root(path)

    def res(rel: str, fld: str) -> str:
        return str(resolve_image(root, rel, file=path, index=index, fld=fld))

    return {"file": str(path), "index": index, "label": rec.label, "user_id": rec.user_id,
            "liked": [res(p, "prefered_images") for p in rec.preferred],
            "disliked": [res(p, "non_prefered_images") for p in rec.non_preferred],
            "image_a": res(rec.image_a, "imageA"), "image_b": res(rec.image_b, "imageB")}


def _references(args: argparse.Namespace) -> tuple[list[str], list[str], dict[str, Any] | None]:
    record = _load_record(args.record) if args.record else None
    liked = _expand(args.liked, "--liked") if args.liked else (record or {}).get("liked", [])
    disliked = _expand(args.disliked, "--disliked") if args.disliked else (record or {}).get("disliked", [])
    for what, given in (("--liked", liked), ("--disliked", disliked)):
        if not given:
            raise CLIError(f"no {what} reference: pass at least one image or folder with {what} PATH (or use --record)")
    if args.max_refs is not None and args.max_refs < 1:
        raise CLIError(f"--max-refs must be >= 1, got {args.max_refs}")
    # fail on missing files / empty folders before the (slow) model load
    from preferthinker.assess import collect_images

    collect_images(liked, what="liked")
    collect_images(disliked, what="disliked")
    return liked, disliked, record


def _assessor(args: argparse.Namespace):
    from preferthinker.assess import Assessor

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", args.device):
        raise CLIError(f"--device {args.device!r}: use auto, cpu, cuda, cuda:N or mps")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CLIError(f"--device {args.device}: no CUDA device is available here; use --device cpu (or auto)")
    return Assessor.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, style=args.style, system=args.system, max_refs=getattr(args, "max_refs", None),
        max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty, batch_size=args.batch_size,
        max_candidates=getattr(args, "max_candidates", 16), retries=getattr(args, "retries", 2),
        retry_temperature=getattr(args, "retry_temperature", 0.7), retry_seed=getattr(args, "retry_seed", 0),
    )


def _header(assessor) -> dict[str, Any]:
    s = assessor.settings
    return {"model": assessor.path, "settings": {**s.to_dict(), "max_new_tokens": assessor.generator.settings.max_new_tokens,
                                                 "repetition_penalty": assessor.generator.settings.repetition_penalty}}


def _print_json(doc: dict) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------------------------------
# readable output


def _width() -> int:
    return max(80, min(140, shutil.get_terminal_size((110, 24)).columns))


def _cut(text: Any, n: int) -> str:
    s = "-" if text is None else " ".join(str(text).split())
    return s if len(s) <= n else s[: max(1, n - 1)] + "…"


def _table(rows: list[list[Any]], header: list[str], widths: list[int], align: str | None = None) -> str:
    align = align or "l" * len(header)

    def line(cells: list[Any]) -> str:
        out = []
        for cell, w, a in zip(cells, widths, align, strict=True):
            c = _cut(cell, w)
            out.append(c.rjust(w) if a == "r" else c.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def _profile_table(pref: dict | None, nonpref: dict | None) -> str:
    from preferthinker.profile import ELEMENTS

    w = (_width() - 18) // 2
    rows = [[e, (pref or {}).get(e), (nonpref or {}).get(e)] for e in ELEMENTS]
    return _table(rows, ["Element", "Preference", "Non-preference"], [15, w, w])


def _notes(notes: Sequence[str]) -> None:
    for n in notes:
        print(textwrap.fill(n, _width(), initial_indent="note: ", subsequent_indent="      "))


def _describe(header: dict, inputs: dict) -> None:
    s = header["settings"]
    src = s["source"] if s["source"] == "defaults" else os.path.basename(s["source"])
    print(f"model: {header['model']}  (prompt {s['style']}, max {s['max_refs']} refs/side, settings from {src})")
    print(f"references: {len(inputs.get('liked', []))} liked, {len(inputs.get('disliked', []))} disliked")


# --------------------------------------------------------------------------------------------------
# commands


def cmd_assess(args: argparse.Namespace) -> int:
    liked, disliked, record = _references(args)
    images = _expand(args.images, "IMAGE")
    if not images and record:
        images = [record["image_a"], record["image_b"]]
    if len(images) != 2:
        raise CLIError(f"assess takes exactly two images, IMAGE_A and IMAGE_B; got {len(images)}"
                       + (f" ({', '.join(images[:4])}{', ...' if len(images) > 4 else ''})" if images else "")
                       + ". Pass several references by repeating --liked/--disliked, by a folder, or by a quoted glob; "
                         "use `rank` for more than two candidates")
    from preferthinker.assess import collect_images

    for what, img in zip(("image_a", "image_b"), images, strict=True):
        collect_images(img, what=what)
        if os.path.isdir(img):
            raise CLIError(f"{what}: {img} is a folder; assess compares two image files (use `rank` for a folder of candidates)")
    assessor = _assessor(args)
    result = assessor.assess(liked, disliked, images[0], images[1])
    header = _header(assessor)
    inputs = dict(assessor.last_inputs)
    if record:
        inputs["record"] = {k: record[k] for k in ("file", "index", "user_id", "label")}
    chosen = {"Image A": images[0], "Image B": images[1]}.get(result.answer)
    if args.json:
        _print_json({"command": "assess", **header, "inputs": inputs, **result.to_dict(), "preferred_image": chosen,
                     "notes": assessor.last_notes})
        return 0
    _describe(header, inputs)
    print(f"Image A: {images[0]}\nImage B: {images[1]}\n")
    print(_profile_table(result.preference, result.non_preference))
    print()
    from preferthinker.profile import ELEMENTS

    w = max(20, (_width() - 30) // 2)
    rows = []
    for k, e in enumerate(ELEMENTS):
        rows.append([e, (result.scores_a or [None] * 5)[k], (result.scores_b or [None] * 5)[k],
                     (result.rationales_a or [None] * 5)[k], (result.rationales_b or [None] * 5)[k]])
    rows.append(["Total", result.total_a, result.total_b, "", ""])
    print(_table(rows, ["Element", "A", "B", "Why A", "Why B"], [15, 3, 3, w, w], "lrrll"))
    print()
    print(f"answer: {result.answer or 'none (no readable <answer>)'}" + (f"  ->  {chosen}" if chosen else ""))
    print(f"status: {result.status}" + {
        "ok": "",
        "from_swapped_order": " (the given order had no readable answer; fields come from the swapped order, in these names)",
        "retried": f" (neither order had a readable answer; a sampled retry gave it, {len(result.attempts or [])} attempts)",
        "no_answer": f" (no readable answer in {len(result.attempts or [])} attempts; --show-raw prints every raw text)",
    }.get(result.status, ""))
    print(f"P(Image A preferred) = {result.probability:.3f} (both orders; "
          f"{'calibrated' if result.calibrated else 'uncalibrated: no calibration.json with the checkpoint'})"
          + (f", swapped order answered {result.swapped_answer}" if result.swapped_answer else ""))
    if record:
        print(f"dataset label: {record['label']}")
    if not result.format_ok:
        print("format: the response does not follow the official format; fields it did not state are shown as '-'"
              + ("" if args.show_raw else " (--show-raw prints the response)"))
    _notes(assessor.last_notes)
    if args.show_raw:
        print("\n--- raw response ---\n" + result.raw)
        for k, att in enumerate(result.attempts or []):
            if att["raw"] != result.raw:
                print(f"\n--- attempt {k + 1}: {att['order']} order, {'sampled' if att['sampled'] else 'greedy'} ---\n{att['raw']}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    liked, disliked, record = _references(args)
    candidates = _expand(args.candidates, "CANDIDATE") + _expand(args.candidate_sources, "--candidates")
    if not candidates:
        raise CLIError("no candidates: pass image files, or a folder / quoted glob with --candidates DIR|GLOB")
    from preferthinker.assess import AssessInputError, collect_images

    items, _ = collect_images(candidates, what="candidates")
    if args.max_candidates < 2:
        raise CLIError(f"--max-candidates must be >= 2, got {args.max_candidates}")
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1, got {args.top_k}")
    for out in args.out:  # before the (slow) ranking, not after it
        if not Path(out).resolve().parent.is_dir():
            raise CLIError(f"--out {out}: the folder {Path(out).resolve().parent} does not exist")
    if len(items) < 2:
        raise AssessInputError(f"rank needs at least two candidates, got {len(items)}"
                               + (f" ({items[0].label})" if items else ""))
    if len(items) > args.max_candidates:
        n = len(items)
        raise AssessInputError(f"{n} candidates need {n * (n - 1)} generations (every pair in both orders); the limit is "
                               f"--max-candidates {args.max_candidates}. Raise it or rank smaller groups")
    assessor = _assessor(args)
    assessor.progress = not args.json  # a tqdm bar on stderr over the N(N-1) generations
    ranking = assessor.rank(liked, disliked, candidates, max_candidates=args.max_candidates)
    header = _header(assessor)
    inputs = dict(assessor.last_inputs)
    if record:
        inputs["record"] = {k: record[k] for k in ("file", "index", "user_id")}
    from preferthinker.ranking import write_ranking

    written = [str(write_ranking(ranking, out, top_k=args.top_k, header={"command": "rank", **header, "inputs": inputs}))
               for out in args.out]
    if args.json:
        doc = {"command": "rank", **header, "inputs": inputs, **ranking.to_dict(args.top_k)}
        doc["notes"] = assessor.last_notes
        doc["written"] = written
        _print_json(doc)
        return 0
    _describe(header, inputs)
    n = len(ranking)
    t = ranking.timing
    print(f"candidates: {n}, comparisons: {len(ranking.comparisons)} (every pair in both orders), "
          f"{t['pairs_per_s']:.2f} pairs/s ({t['pairs']} pairs in {t['seconds']:.1f} s, batch {t['batch_size']})\n")
    w = max(30, _width() - 58)
    shown = ranking[: args.top_k] if args.top_k else ranking
    rows = [[e.rank, f"{e.wins:g}/{n - 1}", None if e.probability is None else f"{e.probability:.2f}",
             None if e.mean_margin is None else f"{e.mean_margin:+.1f}", None if e.mean_total is None else f"{e.mean_total:.1f}",
             e.candidate] for e in shown]
    print(_table(rows, ["rank", "wins", "P(win)", "margin", "mean total", "candidate"], [4, 8, 6, 7, 10, w], "rrrrrl"))
    print(f"P(win): mean probability of being preferred over another candidate "
          f"({'calibrated' if ranking.calibrated else 'uncalibrated: no calibration.json with the checkpoint'})")
    if args.top_k and args.top_k < n:
        print(f"(top {args.top_k} of {n} shown)")
    for path in written:
        print(f"wrote {path}")
    _notes(assessor.last_notes)
    if args.show_raw:
        for c in ranking.comparisons:
            print(f"\n--- A={ranking.candidates[c.a]}  B={ranking.candidates[c.b]} ---\n{c.assessment.raw}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be 0..65535, got {args.port}")
    if not 0 < args.max_upload_mb <= 1024:
        raise CLIError(f"--max-upload-mb must be in (0, 1024], got {args.max_upload_mb}")
    from preferthinker.demo import DemoUnavailable, require_gradio

    try:
        require_gradio()  # a clear message before the (slow) model load when the [demo] extra is missing
    except DemoUnavailable as e:
        raise CLIError(str(e)) from None
    from preferthinker.demo.app import serve

    assessor = _assessor(args)
    serve(assessor, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    liked, disliked, record = _references(args)
    assessor = _assessor(args)
    prof = assessor.profile(liked, disliked)
    header = _header(assessor)
    inputs = dict(assessor.last_inputs)
    if args.json:
        _print_json({"command": "profile", **header, "inputs": inputs, **prof.to_dict(), "notes": assessor.last_notes})
        return 0
    _describe(header, inputs)
    print()
    print(_profile_table(prof.preference, prof.non_preference))
    print(f"status: {prof.status}")
    _notes(assessor.last_notes)
    if args.show_raw:
        print("\n--- raw response ---\n" + prof.raw)
        for k, text in enumerate(prof.attempts or []):
            if text != prof.raw:
                print(f"\n--- attempt {k + 1} ({'greedy' if k == 0 else 'sampled'}) ---\n{text}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from preferthinker.data.schema import default_image_root, load_bench, load_train_jsonl, resolve_image
    from preferthinker.prompting import load_image

    path = Path(args.file)
    if not path.is_file():
        raise CLIError(f"file does not exist: {path}")
    kind = args.kind if args.kind != "auto" else ("train" if path.suffix == ".jsonl" else "bench")
    root = Path(args.image_root) if args.image_root else default_image_root(path)
    recs = (load_train_jsonl if kind == "train" else load_bench)(path, root)
    decoded = 0
    if args.decode:
        seen: set[Path] = set()
        for i, rec in enumerate(recs):
            fields = [("imageA", rec.image_a), ("imageB", rec.image_b)]
            fields += [(f"prefered_images[{k}]", p) for k, p in enumerate(rec.preferred)]
            fields += [(f"non_prefered_images[{k}]", p) for k, p in enumerate(rec.non_preferred)]
            for fld, rel in fields:
                target = resolve_image(root, rel, file=path, index=i, fld=fld)
                if target not in seen:
                    load_image(target, 28 * 28, 28 * 28, what=f"{path}: record {i}: field {fld!r}")
                    seen.add(target)
        decoded = len(seen)
    kind_name = "training JSONL" if kind == "train" else "bench JSON"
    report = {"file": str(path), "kind": kind, "records": len(recs), "image_root": str(root), "ok": True,
              "images_decoded": decoded if args.decode else None,
              "labels": {lab: sum(r.label == lab for r in recs) for lab in ("Image A", "Image B")}}
    if args.json:
        _print_json(report)
    else:
        extra = f", {decoded} distinct images decoded" if args.decode else ""
        print(f"ok: {len(recs)} records in {path} ({kind_name}); every image exists under {root}{extra}; "
              f"labels: {report['labels']['Image A']} Image A, {report['labels']['Image B']} Image B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
