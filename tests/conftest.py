"""Shared fixtures: the real Hydra configs composed with CPU/tiny overrides, a mini dataset in the
official layout, and one tiny Qwen2.5-VL built per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def compose(name: str, overrides: list[str]):
    """Compose configs/<name>.yaml exactly as the entry script would, plus overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from preferthinker.runtime import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory) -> Path:
    from tests.helpers import make_mini_dataset

    return make_mini_dataset(tmp_path_factory.mktemp("mini_data"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, mini_data) -> Path:
    """The tiny backbone, built from the mini dataset's texts (as the SFT recipe does on first use)."""
    from preferthinker.data.loading import PromptSpec, corpus_for_tokenizer, profile_terms
    from preferthinker.data.schema import load_train_jsonl
    from preferthinker.modeling import build_tiny_model

    recs = load_train_jsonl(mini_data / "train" / "sft.jsonl")
    path = tmp_path_factory.mktemp("models") / "tiny"
    return build_tiny_model(path, corpus_for_tokenizer(recs, PromptSpec(style="compact", system="compact")), vocab_size=1024,
                            word_tokens=profile_terms(recs))


def train_overrides(mini_data: Path, tiny_model: Path, run_dir: Path, **extra) -> list[str]:
    over = {
        "data.root": str(mini_data), "model.path": str(tiny_model), "run_dir": str(run_dir), "logger": "none",
        "data.val_samples": 0, "trainer.logging_steps": 1, "trainer.per_device_train_batch_size": 4,
        "data.align_per_record": 0,  # the mini data carries per-image truth; tests that want alignment rows ask for them
        "data.refs_per_side": "null",  # every reference, as the fixtures were tuned; tests/test_refs.py covers the per-record draw
    }
    over.update(extra)
    return [f"{k}={v}" for k, v in over.items()]


def sft_overrides(mini_data: Path, tiny_model: Path, run_dir: Path, **extra) -> list[str]:
    """train_overrides for the SFT recipe: one phase per call (curriculum=none) unless ``curriculum`` is given;
    tests/test_curriculum.py runs the phases."""
    return train_overrides(mini_data, tiny_model, run_dir, **{"curriculum": "none", **extra})


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory, mini_data, tiny_model) -> Path:
    """A tiny model SFT-trained on the mini data long enough to write answers (a GRPO starting point)."""
    from preferthinker.train.sft import run

    run_dir = tmp_path_factory.mktemp("sft_fixture") / "run"
    cfg = compose("sft", sft_overrides(mini_data, tiny_model, run_dir, **{"trainer.max_steps": 60, "trainer.save_strategy": "no",
                                                                          "trainer.learning_rate": 3e-3, "trainer.warmup_steps": 0}))
    run(cfg)
    return run_dir / "final"
