"""Where the CPU time of the embedded default goes: an SFT phase and the evaluation, split into their parts.

SFT (the ``cot`` phase of the tiny56 curriculum, the longest, run for ``--sft-steps`` steps through the real
``train_sft.py`` code path): building the rows, the data collator per batch (the processor's resize / normalise /
patchify + tokenisation + padding), the dataset fetch before it (Arrow rows to Python, the stored PNG bytes decoded),
and the trainer's step (forward + backward + optimizer).

Evaluation (``--eval-prompts`` prompts of SP_ID in batches of 16, the default generation settings): preparing a
batch (images read, chat template, processor), generating (``hf``: transformers ``generate``; ``fast``: the
static-cache engine the GPU uses), and the answer-token pass that feeds the calibrated probability.

    python benchmarks/cpu_time_split.py --model outputs/pipeline/px56/sft/final --out docs/cpu/time_split.json

Prints a table and writes the raw figures as JSON; record them in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return compose("sft", overrides)


def sft_split(model: str, data_root: str, steps: int, run_dir: Path) -> dict:
    """Run the cot phase's settings for ``steps`` steps with the collator and the training step timed."""
    import datasets
    import transformers

    from preferthinker.train import sft

    timings = {"collate_s": 0.0, "fetch_s": 0.0, "step_s": 0.0, "steps": 0, "samples": 0}
    marks: dict[str, float] = {}

    orig_loader = transformers.Trainer.get_train_dataloader
    orig_step = transformers.Trainer.training_step

    def get_train_dataloader(self):
        marks.setdefault("trainer_ready", time.perf_counter())
        collate = self.data_collator
        if not getattr(collate, "_timed", False):
            def timed(examples):
                t1 = time.perf_counter()
                out = collate(examples)
                timings["collate_s"] += time.perf_counter() - t1
                timings["samples"] += len(examples)
                return out

            timed._timed = True
            self.data_collator = timed
        return orig_loader(self)

    orig_getitems = datasets.Dataset.__getitems__

    def getitems(self, keys):  # the dataset fetch: Arrow rows -> Python, the stored PNG bytes decoded to PIL images
        t0 = time.perf_counter()
        out = orig_getitems(self, keys)
        timings["fetch_s"] += time.perf_counter() - t0
        return out

    orig_build, orig_align, orig_from_list = sft.build_examples, sft.build_alignment_examples, datasets.Dataset.from_list

    def timed_setup(fn, key):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    def training_step(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = orig_step(self, *args, **kwargs)
        timings["step_s"] += time.perf_counter() - t0
        timings["steps"] += 1
        return out

    cfg = _compose([f"run_dir={run_dir}", f"model.path={model}", f"data.root={data_root}", "curriculum=none",
                    "data.align_per_record=1", f"trainer.max_steps={steps}", "trainer.save_strategy=no", "data.val_samples=0",
                    "logger=none"])
    transformers.Trainer.get_train_dataloader = get_train_dataloader
    transformers.Trainer.training_step = training_step
    datasets.Dataset.__getitems__ = getitems
    sft.build_examples = timed_setup(orig_build, "rows_s")
    sft.build_alignment_examples = timed_setup(orig_align, "rows_s")
    datasets.Dataset.from_list = timed_setup(orig_from_list, "from_list_s")
    t0 = time.perf_counter()
    try:
        res = sft.run_phase(cfg)
    finally:
        transformers.Trainer.get_train_dataloader = orig_loader
        transformers.Trainer.training_step = orig_step
        datasets.Dataset.__getitems__ = orig_getitems
        sft.build_examples, sft.build_alignment_examples, datasets.Dataset.from_list = orig_build, orig_align, orig_from_list
    total = time.perf_counter() - t0
    setup = marks.get("trainer_ready", t0) - t0
    train_wall = float(res["train_runtime_s"])
    return {
        "steps": timings["steps"], "batch_size": int(cfg.trainer.per_device_train_batch_size), "samples": timings["samples"],
        "setup_s (rows, model, trainer)": round(setup, 2),
        "  rows_s (records read, images opened, prompts built)": round(timings.get("rows_s", 0.0), 2),
        "  from_list_s (rows -> datasets.Dataset, images encoded to PNG)": round(timings.get("from_list_s", 0.0), 2),
        "train_wall_s": round(train_wall, 2),
        "fetch_s (dataset rows + PNG decode)": round(timings["fetch_s"], 2),
        "collate_s (processor + tokenise + pad)": round(timings["collate_s"], 2),
        "step_s (forward + backward + optimizer)": round(timings["step_s"], 2),
        "other_s (logging, scheduler, callbacks)": round(train_wall - timings["collate_s"] - timings["step_s"] - timings["fetch_s"], 2),
        "total_s": round(total, 2),
        "per_step_s": round(train_wall / max(1, timings["steps"]), 3),
        "train_rows": res["train_samples"],
    }


def eval_split(model: str, data_root: str, n_prompts: int, engine: str) -> dict:
    import torch

    from preferthinker.evaluation.generate import GenerationSettings, Generator
    from preferthinker.evaluation.run import load_subsets
    from preferthinker.modeling import load_model_and_processor
    from preferthinker.data.loading import PromptSpec, sample_inputs

    cfg = _compose([])
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)
    m, processor = load_model_and_processor(model, dtype="float32", attn_implementation="sdpa", device="cpu",
                                            min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    gen = Generator(m, processor, GenerationSettings(max_new_tokens=512, batch_size=16, engine=engine, compile=False))
    recs, root = load_subsets(data_root, ["SP_ID"], n_prompts)["SP_ID"]
    t = {"prepare_s": 0.0, "generate_s": 0.0, "answer_pass_s": 0.0, "new_tokens": 0}
    for i in range(0, len(recs), 16):
        t0 = time.perf_counter()
        msgs = [sample_inputs(r, root, spec, embed_images=True)[0] for r in recs[i : i + 16]]
        inputs = gen.encode(msgs)
        t1 = time.perf_counter()
        texts = gen.decode_batch(inputs)
        t2 = time.perf_counter()
        gen.answer_logodds(inputs, texts)
        t3 = time.perf_counter()
        t["prepare_s"] += t1 - t0
        t["generate_s"] += t2 - t1
        t["answer_pass_s"] += t3 - t2
        t["new_tokens"] += sum(len(processor.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in texts)
    total = t["prepare_s"] + t["generate_s"] + t["answer_pass_s"]
    return {"engine": engine, "prompts": len(recs), **{k: round(v, 2) for k, v in t.items()}, "total_s": round(total, 2),
            "samples_per_s": round(len(recs) / total, 2), "threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained tiny checkpoint (the SFT phase starts from it; eval reads it)")
    ap.add_argument("--data", default="data/synthetic", help="the 56-pixel synthetic data (make_data.py's default)")
    ap.add_argument("--sft-steps", type=int, default=20)
    ap.add_argument("--eval-prompts", type=int, default=64)
    ap.add_argument("--engines", default="hf,fast")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        print(f"--model {args.model}: not a checkpoint folder (no config.json)", file=sys.stderr)
        return 2
    if not (Path(args.data) / "train" / "sft.jsonl").is_file():
        print(f"--data {args.data}: no train/sft.jsonl; run python scripts/make_data.py", file=sys.stderr)
        return 2
    import tempfile

    import torch

    report = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
              "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model}
    with tempfile.TemporaryDirectory() as tmp:
        report["sft_cot_phase"] = sft_split(args.model, args.data, args.sft_steps, Path(tmp) / "sft")
    report["eval"] = [eval_split(args.model, args.data, args.eval_prompts, e) for e in args.engines.split(",")]
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
