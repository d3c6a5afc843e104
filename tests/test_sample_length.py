"""Sample length: an official-size sample (the ~2.2k-token official system prompt, 12 images at the release's 512 px,
a 2,048-token completion) passes with the default max_length (the model's limit); a longer one is an error, never cut.
Only tokenizes and counts: no model forward."""

from __future__ import annotations

import pytest
from PIL import Image

from preferthinker.data.loading import PromptSpec, _prompt_tokens, build_examples, model_limit, sample_inputs
from preferthinker.data.schema import PreferenceRecord, SchemaError
from preferthinker.modeling.loading import _set_image_bounds
from tests.conftest import compose


@pytest.fixture
def official_size(tmp_path, tiny_model):
    from transformers import AutoProcessor

    for name in [f"p{i}" for i in range(5)] + [f"n{i}" for i in range(5)] + ["a", "b"]:
        Image.new("RGB", (512, 512), (len(name) * 40, 90, 160)).save(tmp_path / f"{name}.png")
    processor = AutoProcessor.from_pretrained(tiny_model)
    tok = processor.tokenizer
    words, completion = "Image A(4) - the muted pink palette matches the preferred profile; ", ""
    while len(tok(completion, add_special_tokens=False)["input_ids"]) < 2048:
        completion += words
    rec = PreferenceRecord("a.png", "b.png", [f"p{i}.png" for i in range(5)], [f"n{i}.png" for i in range(5)], "Image A", response=completion)
    return rec, tmp_path, processor, completion


def test_official_size_sample_fits_the_default_and_an_over_long_one_raises(official_size):
    rec, root, processor, completion = official_size
    cfg = compose("sft", ["prompt=official"])
    assert cfg.max_length is None and compose("grpo", []).max_length is None
    spec = PromptSpec(style="official", system="official")  # the release's pixel bounds: 512 px -> 18 x 18 = 324 tokens
    # as the recipes load it (model.min/max_pixels set the processor's bounds too); image tokens are counted by
    # the processor, which would otherwise shrink the 504-px images to the tiny build's 56-px default
    _set_image_bounds(processor, spec.min_pixels, spec.max_pixels)
    messages, images = sample_inputs(rec, root, spec)
    assert len(images) == 12 and images[0].size == (504, 504)
    n = _prompt_tokens(processor, messages, images, completion)
    assert n > 12 * 324 + 2048 + 2000  # system prompt + 12 images + the completion: past the former 4,096 default
    assert model_limit(processor) == 32768 and n < model_limit(processor)
    rows = build_examples([rec], root, spec, kind="sft", processor=processor, max_length=cfg.max_length, source="cot.jsonl")
    assert len(rows) == 1 and rows[0]["completion"][0]["content"][0]["text"] == completion  # whole, not truncated
    with pytest.raises(SchemaError, match=rf"cot.jsonl: record 0: sample is {n} tokens, more than max_length={n - 1}"):
        build_examples([rec], root, spec, kind="sft", processor=processor, max_length=n - 1, source="cot.jsonl")


def test_beyond_the_models_limit_is_still_an_error(official_size):
    rec, root, processor, _ = official_size
    processor.tokenizer.model_max_length = 5000  # a model with a short context: the default limit is its own
    with pytest.raises(SchemaError, match="more than max_length=5000"):
        build_examples([rec], root, PromptSpec(style="official", system="official"), kind="sft", processor=processor, source="x")
