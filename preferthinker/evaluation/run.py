"""The evaluation recipe: every claim of the project is measured here.

bench subsets (official layout) -> for each system (the checkpoint, baselines) -> batched greedy
generation, both A/B orders -> per-sample predictions (JSONL, resumable, sharded across processes) ->
metrics per subset -> results.json, results.md (Table-1 style), plots.

Sharding: the ordered list of (sample, orientation) items is cut into fixed batches and batch j goes to
rank j % world_size, so every batch is identical whatever the number of processes and sharded runs give
the same outputs as one process. Each rank appends to its own predictions file after every batch; a
restarted run skips what is already scored.

    python scripts/eval.py                                  # newest tiny checkpoint on the synthetic splits
    python scripts/eval.py +experiment=official_eval_7b model.path=/ckpt/PreferThinker_model bench.root=/data/PreferImg-Bench

A run in which more than ``bench.max_error_rate`` of a system's samples fail (unreadable images, bad
paths) still writes its predictions and reports, then exits non-zero with the most common reasons:
an accuracy over a run of errors is not a result.
    accelerate launch --num_processes 8 scripts/eval.py ... run_dir=outputs/eval/7b
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from preferthinker.data.loading import PromptSpec, sample_inputs
from preferthinker.data.schema import PreferenceRecord, SchemaError, default_image_root, load_bench, subset_paths, warning_counts
from preferthinker.evaluation.errors import EvaluationFailed, error_summary
from preferthinker.evaluation.refs_sweep import parse_sweep, sweep_results
from preferthinker.prompting import STYLES, ImageLoadError
from preferthinker.prompting import SYSTEMS as PROMPT_SYSTEMS
from preferthinker.response import NONPREF_TAG, PREF_TAG, parse_response, render_profile_block
from preferthinker.runtime import CHECKPOINT_SPECS, ConfigError, check, is_main_process, rank, resolve_checkpoint, setup_run, world_size

log = logging.getLogger("preferthinker.eval")

SYSTEMS = ("model", "base", "random", "pixel")


# --------------------------------------------------------------------------------------------------
# items and records


def load_subsets(root: str, subsets: Sequence[str] | None, max_samples: int | None,
                 image_root: str | None = None) -> dict[str, tuple[list[PreferenceRecord], Path]]:
    """{subset: (records, image_root)}; image existence is checked per sample later (a corrupt sample
    is counted, not fatal), everything else about the file is checked now. ``image_root`` (the official
    script's ``--image_root``) replaces the ``images/`` folder beside each JSON; ``{subset}`` in it is
    replaced by the subset name."""
    out = {}
    for name, path in subset_paths(root, list(subsets) if subsets else None).items():
        recs = load_bench(path, validate_images=False)
        folder = Path(str(image_root).replace("{subset}", name)) if image_root else default_image_root(path)
        if not folder.is_dir():
            raise ConfigError(f"bench.image_root={image_root}: {folder} is not a folder (subset {name}); it must hold the "
                              f"images that {path} names, relative paths joined to it")
        out[name] = (recs[: max_samples] if max_samples else recs, folder)
    return out


def base_record(subset: str, index: int, rec: PreferenceRecord, swapped: bool) -> dict:
    shown = rec.swapped() if swapped else rec
    return {
        "subset": subset, "index": index, "pair_id": f"{subset}:{index}", "user_id": rec.user_id, "swapped": swapped,
        "label": shown.label, "true_preference": rec.prefer_attributes, "true_non_preference": rec.non_prefer_attributes,
        "true_scores_a": shown.extra.get("true_scores_a"), "true_scores_b": shown.extra.get("true_scores_b"),
    }


def with_response(rec: dict, text: str | None, error: str | None = None) -> dict:
    a = parse_response(text or "")
    rec.update(raw=text, answer=a.answer, format_ok=a.format_ok, scores_a=a.scores_a, scores_b=a.scores_b,
               total_a=a.total_a, total_b=a.total_b, pred_preference=a.preference, pred_non_preference=a.non_preference,
               error=error)
    return rec


# --------------------------------------------------------------------------------------------------
# systems: each maps a batch of (record, swapped) items to response texts (or errors)


def model_system(path: str, cfg: DictConfig, spec: PromptSpec) -> Callable:
    import torch

    from preferthinker.evaluation.generate import GenerationSettings, Generator
    from preferthinker.modeling import load_model_and_processor

    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    model, processor = load_model_and_processor(path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                                                device=device, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    g = cfg.generation
    compile_ = g.get("compile", "auto")
    gen = Generator(model, processor, GenerationSettings(max_new_tokens=int(g.max_new_tokens), repetition_penalty=float(g.repetition_penalty),
                                                         batch_size=int(g.batch_size), engine=str(g.get("engine", "auto")),
                                                         compile=None if compile_ == "auto" else bool(compile_),
                                                         min_new_tokens=int(g.get("min_new_tokens") or 0), vision_ids=spec.vision_ids))
    log.info("generation engine for %s: %s", path, gen.engine)
    return _model_respond(gen, spec)


def _model_respond(gen: Any, spec: PromptSpec) -> Callable:
    """A system answering with ``gen`` under prompt ``spec``; ``respond.with_spec(other)`` is the same loaded
    model under another prompt (the reference-count sweep changes only ``max_refs``)."""

    def prepare(items: list[tuple[PreferenceRecord, Path, bool, str]]):
        """CPU side of a batch (images read, prompts tokenised, pixels patchified): run ahead of the GPU."""
        out: list[tuple[str | None, str | None]] = [(None, None)] * len(items)
        prompts, where = [], []
        for k, (rec, root, swapped, tag) in enumerate(items):
            try:
                msgs, _ = sample_inputs(rec.swapped() if swapped else rec, root, spec, embed_images=True, where=f"{tag}: ")
                prompts.append(msgs)
                where.append(k)
            except (ImageLoadError, SchemaError) as e:
                out[k] = (None, str(e))
        return out, where, gen.encode(prompts) if prompts else None

    def finish(prepared) -> list[tuple]:
        out, where, inputs = prepared
        texts = gen.decode_batch(inputs) if inputs is not None else []
        # the answer token's log-odds (one teacher-forced pass) feeds the calibrated probability
        logodds = gen.answer_logodds(inputs, texts) if inputs is not None else []
        for k, text, lo in zip(where, texts, logodds, strict=True):
            out[k] = (text, None, lo)
        return out

    def respond(items):
        return finish(prepare(items))

    respond.prepare, respond.finish = prepare, finish  # score_system overlaps prepare(batch k+1) with finish(batch k)
    respond.with_spec = lambda other: _model_respond(gen, other)
    return respond


def random_system(seed: int) -> Callable:
    """Coin flip per item (seeded by the item, so it is stable across shards and restarts)."""

    def respond(items):
        out = []
        for rec, _, swapped, tag in items:
            ans = random.Random(f"{seed}:{tag}:{swapped}").choice(["Image A", "Image B"])
            out.append((f"<answer>{ans}</answer>", None))
        return out

    return respond


def pixel_system(spec: PromptSpec) -> Callable:
    """The non-learned pixel-statistics baseline of the synthetic data engine, rendered through the
    response contract so that the same metrics apply (profiles, answer)."""
    from preferthinker.data.synthetic.baseline import baseline_predict

    def respond(items):
        out = []
        for rec, root, swapped, tag in items:
            try:
                pred = baseline_predict(rec.swapped() if swapped else rec, root)
            except (ImageLoadError, SchemaError, OSError) as e:
                out.append((None, f"{tag}: {e}"))
                continue
            parts = [render_profile_block(block, pred[key]) for block, key in ((PREF_TAG, "preference"), (NONPREF_TAG, "non_preference"))
                     if pred.get(key)]
            parts.append(f"<answer>{pred['answer']}</answer>")
            out.append(("\n\n".join(parts), None))
        return out

    return respond


# --------------------------------------------------------------------------------------------------
# the run


def resolve_model_path(path: Any) -> str:
    if path is None or str(path) in CHECKPOINT_SPECS:
        return resolve_checkpoint(path)
    if not Path(str(path)).is_dir():
        from preferthinker.modeling import ModelLoadError

        raise ModelLoadError(f"model.path={path}: no such checkpoint folder. Pass the folder of a trained run "
                             f"(outputs/<stage>/<run>/final) or a downloaded Qwen2.5-VL / PreferThinker checkpoint.")
    return str(path)


def _read_done(files: Sequence[Path]) -> dict[tuple, dict]:
    done: dict[tuple, dict] = {}
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: re-score it
                continue
            done[(r["index"], bool(r["swapped"]))] = r
    return done


def score_system(name: str, respond: Callable, data: dict, cfg: DictConfig, pred_dir: Path,
                 batch_times: list | None = None, swap: bool | None = None) -> dict[str, list[dict]]:
    """Run one system over every subset, resumably and sharded; returns all records (rank 0 after merge).
    ``batch_times`` collects (samples, seconds) per batch this rank scored (warm-up batches included);
    ``swap`` (default ``bench.swap``) also scores every pair with A and B exchanged."""
    bs = int(cfg.generation.batch_size)
    rk, ws = rank(), world_size()
    swap = bool(cfg.bench.swap) if swap is None else swap
    for subset, (recs, root) in data.items():
        items = [(i, sw) for i in range(len(recs)) for sw in ((False, True) if swap else (False,))]
        batches = [items[j : j + bs] for j in range(0, len(items), bs)]
        mine = [b for j, b in enumerate(batches) if j % ws == rk]
        out_file = pred_dir / name / f"{subset}.rank{rk}.jsonl"
        out_file.parent.mkdir(parents=True, exist_ok=True)
        done = _read_done([out_file])
        todo = [b for b in mine if any(key not in done for key in b)]
        if len(todo) < len(mine):
            log.info("%s/%s: %d of %d batches already scored (resuming)", name, subset, len(mine) - len(todo), len(mine))
        todo = [[key for key in b if key not in done] for b in todo]

        def items_of(b: list) -> list:
            return [(recs[i], root, sw, f"{subset} record {i}") for i, sw in b]

        prepare, finish = getattr(respond, "prepare", None), getattr(respond, "finish", None)
        pool = ThreadPoolExecutor(max_workers=1) if prepare is not None and len(todo) > 1 else None
        ahead = pool.submit(prepare, items_of(todo[0])) if pool is not None else None
        with open(out_file, "a", encoding="utf-8") as fh:
            for j, batch in enumerate(tqdm(todo, desc=f"{name} {subset}", disable=not is_main_process() or not todo)):
                tb = time.time()
                if ahead is not None:  # the next batch's images and tokens are prepared while this one generates
                    prepared = ahead.result()
                    ahead = pool.submit(prepare, items_of(todo[j + 1])) if j + 1 < len(todo) else None
                    texts = finish(prepared)
                else:
                    texts = respond(items_of(batch))
                for (i, sw), (text, err, *scored) in zip(batch, texts, strict=True):
                    rec = with_response(base_record(subset, i, recs[i], sw), text, err)
                    if scored:  # model systems also return the answer log-odds
                        rec["answer_logodds"] = scored[0]
                    fh.write(json.dumps(rec) + "\n")
                fh.flush()
                if batch_times is not None:
                    batch_times.append((len(batch), time.time() - tb))
        if pool is not None:
            pool.shutdown()
    _barrier()
    merged: dict[str, list[dict]] = {}
    for subset in data:
        rows = _read_done(sorted((pred_dir / name).glob(f"{subset}.rank*.jsonl")))
        merged[subset] = [rows[k] for k in sorted(rows)]
    return merged


def _barrier() -> None:
    """Wait for every rank. torch.distributed directly: under torchrun on CPU, accelerate's PartialState reports
    DistributedType.NO (its wait_for_everyone is then a no-op) although the gloo group is up, which let rank 0
    merge the prediction files before the other ranks had written their last batch."""
    if world_size() > 1:
        import torch.distributed as dist

        _init_process_group()  # no-op when the group is already up
        dist.barrier()


def _init_process_group() -> None:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def validate(cfg: DictConfig) -> None:
    for s in cfg.systems:
        check(s in SYSTEMS, "systems", list(cfg.systems), f"unknown system {s!r}; choose from {SYSTEMS}")
    bs = cfg.generation.batch_size
    check(bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1), "generation.batch_size", bs,
          "use auto or an integer >= 1")
    check(0 < int(cfg.generation.max_new_tokens) <= 32768, "generation.max_new_tokens", cfg.generation.max_new_tokens, "use 1..32768")
    check(float(cfg.generation.repetition_penalty) > 0, "generation.repetition_penalty", cfg.generation.repetition_penalty, "use > 0 (1.0 = off)")
    engine = cfg.generation.get("engine", "auto")
    check(engine in ("auto", "hf", "fast"), "generation.engine", engine, "choose auto, hf or fast")
    check(cfg.generation.get("compile", "auto") in ("auto", True, False), "generation.compile", cfg.generation.get("compile"),
          "choose auto, true or false")
    check(0 <= int(cfg.generation.get("min_new_tokens") or 0) <= int(cfg.generation.max_new_tokens), "generation.min_new_tokens",
          cfg.generation.get("min_new_tokens"), "use 0..max_new_tokens (benchmarks only)")
    if cfg.bench.max_samples is not None:
        check(int(cfg.bench.max_samples) >= 1, "bench.max_samples", cfg.bench.max_samples, "use >= 1 or null")
    try:
        sweep = parse_sweep(_plain(cfg.bench.get("refs_sweep")))
    except ValueError as e:
        raise ConfigError(f"{e}; e.g. bench.refs_sweep=[1,2,3,5] or null") from None
    check(not sweep or "model" in cfg.systems, "bench.refs_sweep", sweep, "the sweep scores the checkpoint: keep 'model' in systems")
    rate = cfg.bench.get("max_error_rate", 0.05)
    check(isinstance(rate, (int, float)) and 0 <= float(rate) <= 1, "bench.max_error_rate", rate, "use a fraction in [0, 1]")
    check(cfg.prompt.style in STYLES, "prompt.style", cfg.prompt.style, f"choose one of {', '.join(STYLES)}")
    check(cfg.prompt.system in PROMPT_SYSTEMS or cfg.prompt.system is None, "prompt.system", cfg.prompt.system,
          f"choose one of {', '.join(PROMPT_SYSTEMS)}")
    cal = cfg.get("calibration")
    if cal is not None:  # checked before any generation, not after the run
        check(0.0 < float(cal.get("fit_fraction", 0.5)) < 1.0, "calibration.fit_fraction", cal.get("fit_fraction"),
              "use a fraction strictly between 0 and 1 (the share of users the calibrator is fitted on)")
        check(2 <= int(cal.get("n_bins", 10)) <= 100, "calibration.n_bins", cal.get("n_bins"), "use 2..100")
        check(not cal.get("fit") or bool(cfg.bench.swap), "calibration.fit", cal.get("fit"),
              "fitting needs both candidate orders: keep bench.swap=true")


def _plain(value: Any) -> Any:
    """An OmegaConf node as plain Python (lists, dicts), anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def score_refs_sweep(respond: Callable, main_records: dict[str, list[dict]], data: dict, cfg: DictConfig, spec: PromptSpec,
                     pred_dir: Path) -> dict[int, dict[str, list[dict]]]:
    """{k: {subset: records}}: the checkpoint with the first ``k`` references per side, unswapped pairs, for each
    ``bench.refs_sweep`` count. Each count has its own prediction files (``model_refs<k>``: resumable); the count
    equal to ``prompt.max_refs`` is the main run's predictions."""
    out: dict[int, dict[str, list[dict]]] = {}
    for k in parse_sweep(_plain(cfg.bench.get("refs_sweep"))) or []:
        if k == spec.max_refs:
            out[k] = main_records
            continue
        log.info("reference-count sweep: %d per side", k)
        out[k] = score_system(f"model_refs{k}", respond.with_spec(replace(spec, max_refs=k)), data, cfg, pred_dir, swap=False)
    return out


def resolve_batch_size(cfg: DictConfig, cuda: bool | None = None) -> int:
    """``generation.batch_size``: an integer as given; ``auto`` = 16 on CUDA (the memory of long real prompts bounds
    it) and 64 on CPU, where each decode step's fixed cost dominates and 64 scores ~35 % more samples/s than 16 on the
    2-core machine (docs/benchmarks.md). Greedy answers do not depend on it."""
    bs = cfg.generation.batch_size
    if bs != "auto":
        return int(bs)
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return 16 if cuda else 64


def run(cfg: DictConfig) -> dict:
    validate(cfg)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.generation.batch_size = resolve_batch_size(cfg)
    if world_size() > 1:  # form the process group before anything waits on it
        _init_process_group()
    run_dir = setup_run(cfg, "eval")
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)
    data = load_subsets(str(cfg.bench.root), cfg.bench.subsets, cfg.bench.max_samples, cfg.bench.get("image_root"))
    log.info("subsets: %s", ", ".join(f"{k} ({len(v[0])})" for k, v in data.items()))

    all_records: dict[str, dict[str, list[dict]]] = {}
    sweep_records: dict[int, dict[str, list[dict]]] = {}
    timings: dict[str, float] = {}
    batch_times: dict[str, list] = {}
    model_path = None
    label = {"model": "PreferThinker", "base": "Base model", "random": "Random", "pixel": "Pixel-statistics baseline"}
    extra = dict(cfg.get("extra_models") or {})  # {label: checkpoint}: more checkpoints side by side (ablations)
    for name in list(cfg.systems) + [f"extra:{k}" for k in extra]:
        if name.startswith("extra:"):
            label[name] = name[len("extra:"):]
            respond = model_system(resolve_model_path(extra[label[name]]), cfg, spec)
        elif name == "model":
            model_path = resolve_model_path(cfg.model.path)
            respond = model_system(model_path, cfg, spec)
        elif name == "base":
            respond = model_system(resolve_base_path(cfg), cfg, spec)
        elif name == "random":
            respond = random_system(int(cfg.seed))
        else:
            respond = pixel_system(spec)
        t0 = time.time()
        batch_times[name] = []
        all_records[name] = score_system(name.replace("extra:", "extra_").replace("/", "_"), respond, data, cfg, run_dir / "predictions",
                                         batch_times[name])
        timings[name] = time.time() - t0
        if name == "model" and cfg.bench.get("refs_sweep"):
            sweep_records = score_refs_sweep(respond, all_records[name], data, cfg, spec, run_dir / "predictions")
        del respond

    if not is_main_process():
        return {}
    from preferthinker.evaluation.metrics import paired_average_diff, paired_bootstrap_diff, paired_similarity_diff, subset_metrics
    from preferthinker.evaluation.report import write_report

    def metrics(records: dict[str, list[dict]]) -> dict:
        return {s: subset_metrics(r, n_boot=int(cfg.metrics.n_boot), seed=int(cfg.seed), compute_similarity=bool(cfg.metrics.similarity))
                for s, r in records.items()}

    names = list(all_records)
    main = "model" if "model" in names else names[0]
    if cfg.get("model_label"):
        label["model"] = str(cfg.model_label)
    results: dict[str, Any] = {
        "system": label[main], "model_path": model_path, "bench_root": str(cfg.bench.root), "seed": int(cfg.seed),
        "generation": OmegaConf.to_container(cfg.generation, resolve=True), "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
        "world_size": world_size(), "subsets": metrics(all_records[main]),
        "systems": {label[n]: {"subsets": metrics(all_records[n])} for n in names if n != main},
        "timing_s": {label[n]: round(t, 1) for n, t in timings.items()},
        # what the official script tolerates (empty reference lists, identical candidates, partial profiles): counted
        "data_warnings": {s: warning_counts(recs) for s, (recs, _) in data.items() if warning_counts(recs)},
        "errors": {label[n]: error_summary(all_records[n]) for n in names},
    }
    n_items = sum(len(r) for r in all_records[main].values())
    # samples scored by this run (a resumed run does not count the rows it found on disk); batches are dealt
    # round-robin, so rank 0's count times the world size is the job's count to within one batch per rank
    results["samples_per_s"] = {label[n]: round(sum(k for k, _ in batch_times[n]) * world_size() / max(t, 1e-9), 2) for n, t in timings.items()}
    # steady state: the first batch carries one-off costs (CUDA-graph capture, compilation, lazy init)
    results["samples_per_s_after_first_batch"] = {
        label[n]: round(sum(k for k, _ in bt[1:]) / max(sum(t for _, t in bt[1:]), 1e-9), 2) for n, bt in batch_times.items() if len(bt) > 1}
    results["first_batch_s"] = {label[n]: round(bt[0][1], 2) for n, bt in batch_times.items() if bt}
    results["comparisons"] = {
        f"{label[main]} - {label[n]}": {s: paired_bootstrap_diff(all_records[main][s], all_records[n][s], n_boot=int(cfg.metrics.n_boot), seed=int(cfg.seed))
                                        for s in all_records[main]}
        for n in names if n != main
    }
    if cfg.metrics.similarity:  # Pred differences with the same paired, user-clustered bootstrap, between every two systems
        results["pred_comparisons"] = {}  # embedder None: the default MiniLM, loaded once and cached by preferthinker.similarity
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                per = {s: paired_similarity_diff(all_records[x][s], all_records[y][s], None, n_boot=int(cfg.metrics.n_boot), seed=int(cfg.seed))
                       for s in all_records[x]}
                per = {s: v for s, v in per.items() if v is not None}
                if per:
                    results["pred_comparisons"][f"{label[x]} - {label[y]}"] = per
    # the "Avg." column compared between every two systems: a paired, user-clustered bootstrap stratified by subset
    # (what "GRPO improves the four-split average" needs; the per-subset comparisons above cannot say it)
    results["average_comparisons"] = {}
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            entry = {m: paired_average_diff(all_records[x], all_records[y], m, None, n_boot=int(cfg.metrics.n_boot), seed=int(cfg.seed))
                     for m in (("accuracy", "pred") if cfg.metrics.similarity else ("accuracy",))}
            entry = {m: v for m, v in entry.items() if v is not None}
            if entry:
                results["average_comparisons"][f"{label[x]} - {label[y]}"] = entry
    if sweep_records:  # accuracy and parse failures by reference count (the same bootstrap as every accuracy here)
        results["refs_sweep"] = sweep_results({k: {s: subset_metrics(r, n_boot=int(cfg.metrics.n_boot), seed=int(cfg.seed), compute_similarity=False)
                                                   for s, r in recs.items()} for k, recs in sweep_records.items()})
    if model_path is not None and cfg.get("calibration") is not None:
        from preferthinker.evaluation.calibration_metrics import add_calibration

        add_calibration(results, all_records[main], model_path, cfg, run_dir)
    written = write_report(results, run_dir)
    log.info("scored %d items with %s; report: %s", n_items, label[main], written.get("markdown", run_dir / "results.md"))
    print((run_dir / "results.md").read_text() if (run_dir / "results.md").is_file() else json.dumps(results["subsets"], indent=1))
    failed = {n: e for n, e in results["errors"].items() if e["rate"] > float(cfg.bench.get("max_error_rate", 0.05))}
    if failed:  # reports and predictions are written (and resumable); the exit status says the numbers are not results
        raise EvaluationFailed(failed, float(cfg.bench.get("max_error_rate", 0.05)), run_dir)
    return results


def resolve_base_path(cfg: DictConfig) -> str:
    """The untrained backbone: `base_model` if set, else the model group's path (the tiny default)."""
    path = cfg.get("base_model") or cfg.model.get("base_path") or cfg.model.path
    if path in (None, "latest", "latest_sft", "latest_grpo"):
        raise ConfigError("systems contains 'base' but no base model is known: pass base_model=<backbone folder>")
    return resolve_model_path(path)
