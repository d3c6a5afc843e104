"""Tests for preferthinker.modeling: tokenizer, tiny Qwen2.5-VL, loading, LoRA.

Everything runs offline on CPU; one tiny model is built per module and reused.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preferthinker import modeling
from preferthinker.modeling.tiny import _mrope_section
from preferthinker.modeling import (
    FORMAT_TAGS,
    QWEN2_5_VL_CHAT_TEMPLATE,
    QWEN_SPECIAL_TOKENS,
    ModelLoadError,
    apply_lora,
    build_tiny_model,
    count_parameters,
    get_vision_tower,
    load_model_and_processor,
    lora_config,
    merge_lora,
    train_tokenizer,
)

# A small corpus in the shape of PreferThinker text: prompts, profiles, reasoning, answers, plus odd text.
CORPUS = [
    "You are an expert in personalized image preference assessment.",
    "The user likes the following images and dislikes the following images.",
    "Which of Image A and Image B would this user prefer?",
    "<visual preference profile>Art Styles: impressionism; Color: warm; Artistic Medium: oil paint; "
    "Saturation: high; Detail: rich</visual preference profile>",
    "<visual non-preference profile>Art Styles: cubism; Color: cold; Artistic Medium: pixel art; "
    "Saturation: low; Detail: minimal</visual non-preference profile>",
    "<think>Art Styles: Image A scores 4 because it is impressionist; Image B scores 1.</think>",
    "<think>Color: Image A uses warm oranges (5); Image B is grey and blue (2).</think>",
    "Total:\nImage A: total_score=4+5+4+5+4=22\nImage B: total_score=1+2+2+3+1=9",
    "<answer>Image A</answer>",
    "<answer>Image B</answer>",
    "A watercolor landscape with soft pastel colors and loose brushwork.",
    "A hyper-detailed digital painting of a cyberpunk city at night, neon everywhere.",
    "An ink sketch of a cat, monochrome, very little detail.",
    "Minimalist flat vector illustration, low saturation, clean lines.",
    "Baroque oil painting, dramatic chiaroscuro, deep reds and golds.",
    "Pixel art castle, 16-bit palette, saturated blues.",
    "Charcoal portrait study, high contrast, rough texture.",
    "Photorealistic 3D render of a glass sphere on a marble table.",
    "Ukiyo-e style wave, indigo and white, fine linework.",
    "Pop art comic panel with halftone dots and bold primaries.",
    "She said: \"I don't like it\" and he replied 'it's fine'.",
    "Tabs\tand  double  spaces   and trailing space ",
    "Numbers 12345 and 3.14159 and 1,000,000.",
    "我喜欢印象派的油画，颜色要温暖。",
    "这张图片的细节非常丰富，饱和度很高。",
    "Emoji: 🎨🖼️😀 and ❤️ are common in captions.",
    "Café, naïve, résumé, Zürich, São Paulo.",
    "Line one\nLine two\r\nLine three\n\n\nEnd.",
    "Markdown: **bold**, _italic_, `code`, [link](http://example.com).",
    "JSON: {\"Art Styles\": \"surrealism\", \"Color\": \"vivid\"}",
] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=2048)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", CORPUS, seed=0)


def _random_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _preference_messages(seed: int = 0) -> list[dict]:
    """System + user turn with 5 liked, 5 disliked and 2 candidate images (a few of odd size)."""
    rng = np.random.default_rng(seed)
    liked = [_random_image(rng, 56, 56) for _ in range(5)]
    disliked = [_random_image(rng, 56, 56) for _ in range(4)] + [_random_image(rng, 100, 80)]
    candidates = [_random_image(rng, 56, 56), _random_image(rng, 37, 121)]
    content = [{"type": "text", "text": "Images the user likes:"}]
    content += [{"type": "image", "image": im} for im in liked]
    content += [{"type": "text", "text": "Images the user dislikes:"}]
    content += [{"type": "image", "image": im} for im in disliked]
    content += [{"type": "text", "text": "Image A:"}, {"type": "image", "image": candidates[0]}]
    content += [{"type": "text", "text": "Image B:"}, {"type": "image", "image": candidates[1]}]
    content += [{"type": "text", "text": "Which image would the user prefer?"}]
    return [
        {"role": "system", "content": [{"type": "text", "text": "You assess personalized image preference."}]},
        {"role": "user", "content": content},
    ]


def _text_inputs(processor, text: str = "Which image? <think>") -> dict:
    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    return processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
    )


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------

TRICKY = [
    "",
    "plain ascii text",
    "  leading and trailing spaces  ",
    "newlines\n\nand\r\nwindows\rline ends\n",
    "tabs\tand\u00a0non-breaking\u2003spaces",
    "\"double\" 'single' “curly” ‘quotes’ «guillemets»",
    "emoji 🎨🖼️😀👩‍👩‍👧‍👦🏳️‍🌈 and flags 🇯🇵",
    "中文：我喜欢温暖的颜色和丰富的细节。日本語もテスト。한국어",
    "mixed العربية עברית ελληνικά русский हिन्दी",
    "control \x00\x01\x7f chars and \ufeff BOM",
    "<think>inline tags</think><answer>Image A</answer>",
    "math ∑∫√∞ ≤ ≥ ≠ and symbols ©®™ § ¶",
    "a" * 300,
]


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # Nothing is unknown in a byte-level vocabulary.
    assert all(0 <= i < len(tokenizer) for i in ids)


def test_tokenizer_normalizes_to_nfc_like_qwen(tokenizer):
    decomposed = "Cafe\u0301 and n\u0303"  # e + combining acute, n + combining tilde
    ids = tokenizer.encode(decomposed, add_special_tokens=False)
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", decomposed)


def test_tags_are_single_ordinary_tokens(tokenizer):
    assert FORMAT_TAGS == (
        "<visual preference profile>", "</visual preference profile>",
        "<visual non-preference profile>", "</visual non-preference profile>",
        "<think>", "</think>", "<answer>", "</answer>",
    )
    for tag in FORMAT_TAGS:
        ids = tokenizer.encode(tag, add_special_tokens=False)
        assert len(ids) == 1, tag
        assert tag not in tokenizer.all_special_tokens
    response = (
        "<visual preference profile>Color: warm</visual preference profile>"
        "<visual non-preference profile>Color: cold</visual non-preference profile>"
        "<think>A is warmer.</think><answer>Image A</answer>"
    )
    ids = tokenizer.encode(response + "<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == response
    # Tags glued to text still split off as whole tokens.
    assert tokenizer.convert_tokens_to_ids("<think>") in tokenizer.encode("x<think>y", add_special_tokens=False)


def test_special_tokens_and_roles(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    assert tokenizer.unk_token is None
    specials = set(tokenizer.all_special_tokens)
    ids = []
    for token in QWEN_SPECIAL_TOKENS:
        assert token in specials, token
        encoded = tokenizer.encode(token, add_special_tokens=False)
        assert len(encoded) == 1, token
        ids.append(encoded[0])
    # Same relative order as the released Qwen vocabulary, right after the BPE vocabulary.
    assert ids == sorted(ids) and ids[-1] - ids[0] == len(ids) - 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == ""
    assert len(tokenizer) <= 2048


def test_tokenizer_training_is_deterministic(tokenizer):
    again = train_tokenizer(CORPUS, vocab_size=2048)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_word_tokens_are_one_id_in_every_context():
    terms = ["Rose Pink", "Art Deco", "Muted", "Hyper-detailed"]
    tok = train_tokenizer(CORPUS, vocab_size=2048, word_tokens=terms)
    plain = train_tokenizer(CORPUS, vocab_size=2048)
    # a profile block writes the term after a quote, a rationale after a space: BPE alone gives different pieces
    profile, rationale = '"Color": "Rose Pink",', "Image A(5) - Rose Pink, preferred;"
    assert plain.encode('"Rose Pink"', add_special_tokens=False)[1] != plain.encode(" Rose Pink", add_special_tokens=False)[0]
    for term in terms:
        tid = tok.convert_tokens_to_ids(term)
        assert tok.encode(term, add_special_tokens=False) == [tid]
        for context in (f'"{term}"', f"- {term}, preferred", f"shows: {term}."):
            assert tid in tok.encode(context, add_special_tokens=False), context
    for text in (profile, rationale, "Richness, Muted-ish, Hyper-detailed!"):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert len(tok) == len(plain) + len(terms)
    with pytest.raises(ValueError, match="word_tokens"):
        train_tokenizer(CORPUS, vocab_size=2048, word_tokens=[" padded"])
    with pytest.raises(ValueError, match="word_tokens"):
        train_tokenizer(CORPUS, vocab_size=2048, word_tokens=["<think>"])


def test_vocab_size_bounds():
    small = train_tokenizer(CORPUS, vocab_size=300)
    assert len(small) <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_chat_template_is_stock_and_trl_patches_it(tiny_dir):
    trl_templates = pytest.importorskip("trl.chat_template_utils")
    assert QWEN2_5_VL_CHAT_TEMPLATE == trl_templates.qwen2_5_vl_chat_template
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    assert processor.chat_template == QWEN2_5_VL_CHAT_TEMPLATE
    # What SFT assistant_only_loss needs: TRL recognises the template and returns its training variant.
    assert trl_templates.get_training_chat_template(processor) == trl_templates.qwen2_5_vl_training_chat_template


# ------------------------------------------------------------------------------------------------
# Tiny model: build, reload, generate
# ------------------------------------------------------------------------------------------------


def test_tiny_model_files_and_config(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    for required in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        assert required in names, required

    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    text, vision = config.text_config, config.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert vision.out_hidden_size == text.hidden_size
    assert (vision.hidden_size // vision.num_heads) % 4 == 0
    assert text.vocab_size == len(tok)
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    gen = GenerationConfig.from_pretrained(tiny_dir)
    assert gen.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert gen.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")


def test_reload_and_generate_with_twelve_images(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    inputs = processor.apply_chat_template(
        _preference_messages(),
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        add_generation_prompt=True,
    )
    grid = inputs["image_grid_thw"]
    assert grid.shape == (12, 3)
    # 56x56 images: a 4x4 patch grid = 2x2 merged = 4 image tokens each.
    assert grid[0].tolist() == [1, 4, 4]
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == int(grid.prod(-1).sum()) // 4
    # Odd sizes are resized to multiples of 28 near the 56x56 budget (W x H): the tenth image, 100x80, shrinks to
    # 56x28 = a 2x4 patch grid = 2 tokens; Image B, 37x121, rounds to 28x112 = 8x2 patches = 4 tokens.
    assert grid.tolist() == [[1, 4, 4]] * 9 + [[1, 2, 4], [1, 4, 4], [1, 8, 2]]
    assert (grid.prod(-1) // 4).tolist() == [4] * 9 + [2, 4, 4]

    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= new.numel() <= 8
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


def test_build_is_deterministic(tmp_path):
    kwargs = dict(text_layers=1, hidden_size=32, intermediate_size=64, vision_depth=1, vision_hidden_size=32,
                  vision_intermediate_size=32)
    a = build_tiny_model(tmp_path / "a", CORPUS, seed=7, **kwargs)
    b = build_tiny_model(tmp_path / "b", CORPUS, seed=7, **kwargs)
    c = build_tiny_model(tmp_path / "c", CORPUS, seed=8, **kwargs)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_build_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="divisible by 4"):
        build_tiny_model(tmp_path / "x", CORPUS, vision_hidden_size=24, vision_heads=4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        build_tiny_model(tmp_path / "x", CORPUS, num_heads=4, num_kv_heads=3)


def test_fine_patch_build_keeps_four_tokens_per_image(tmp_path):
    """7x7 patches merged 4x4 (a build option) still give one LM token per 28x28 pixels: the ViT sees 64
    patches of a 56-pixel image, the LM the same 4 tokens; the processor saved beside it agrees."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = build_tiny_model(tmp_path / "p7", CORPUS, text_layers=1, hidden_size=32, intermediate_size=64,
                            vision_depth=1, vision_hidden_size=32, vision_intermediate_size=32,
                            vision_patch_size=7, vision_merge_size=4)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    assert (model.config.vision_config.patch_size, model.config.vision_config.spatial_merge_size) == (7, 4)
    assert (processor.image_processor.patch_size, processor.image_processor.merge_size) == (7, 4)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (56, 56), (200, 30, 30))},
                                             {"type": "text", "text": "Which image?"}]}]
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                           add_generation_prompt=True)
    assert inputs["image_grid_thw"][0].tolist() == [1, 8, 8]
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 4
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()


def test_build_rejects_patch_sizes_that_change_the_token_grid(tmp_path):
    with pytest.raises(ValueError, match="must be 28"):
        build_tiny_model(tmp_path / "x", CORPUS, vision_patch_size=7, vision_merge_size=2)


def test_build_mismatches_names_each_changed_size(tmp_path):
    path = build_tiny_model(tmp_path / "m", CORPUS, text_layers=1, hidden_size=32, intermediate_size=64,
                            vision_depth=1, vision_hidden_size=32, vision_intermediate_size=32)
    same = {"text_layers": 1, "hidden_size": 32, "vision_depth": 1, "vision_patch_size": 14, "seed": 3, "term_tokens": True}
    assert modeling.build_mismatches(path, same) == []
    diff = modeling.build_mismatches(path, {**same, "vision_patch_size": 7, "vision_merge_size": 4})
    assert diff == ["vision_patch_size: checkpoint 14, config 7", "vision_merge_size: checkpoint 2, config 4"]
    assert modeling.build_mismatches(tmp_path / "absent", same) == []


def test_mrope_section_matches_qwen_for_real_head_dim():
    assert _mrope_section(128) == [16, 24, 24]
    assert sum(_mrope_section(32)) == 16


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def test_load_defaults_on_cpu(tiny_dir):
    model, processor = load_model_and_processor(tiny_dir, device="cpu")
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert not model.training
    assert processor.tokenizer.padding_side == "left"
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["trainable"] == counts["total"]

    model, processor = load_model_and_processor(tiny_dir, dtype="bf16", padding_side="right", for_training=True)
    assert model.dtype == torch.bfloat16
    assert model.training and model.config.use_cache is False
    assert processor.tokenizer.padding_side == "right"


def test_pixel_bounds_override(tiny_dir):
    _, processor = load_model_and_processor(tiny_dir, min_pixels=112 * 112, max_pixels=112 * 112)
    assert processor.image_processor.size["shortest_edge"] == 112 * 112
    assert processor.image_processor.size["longest_edge"] == 112 * 112
    image = _random_image(np.random.default_rng(0), 56, 56)
    out = processor.image_processor(images=[image], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]  # 112x112 => 16 merged tokens
    with pytest.raises(ValueError, match="max_pixels"):
        load_model_and_processor(tiny_dir, min_pixels=112 * 112, max_pixels=56 * 56)


def test_freeze_vision_freezes_exactly_the_vision_tower(tiny_dir):
    model, _ = load_model_and_processor(tiny_dir, freeze_vision=True, for_training=True)
    vision_ids = {id(p) for p in get_vision_tower(model).parameters()}
    assert vision_ids
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) not in vision_ids), name
        assert (".visual." in f".{name}") == (id(p) in vision_ids), name
    counts = count_parameters(model)
    assert counts["trainable"] == counts["total"] - sum(p.numel() for p in get_vision_tower(model).parameters())


def test_missing_path_raises_clear_error(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError) as info:
        load_model_and_processor(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message and "model.path=" in message


def test_unreachable_hub_id_raises_clear_error():
    with pytest.raises(ModelLoadError) as info:
        load_model_and_processor("preferthinker-nonexistent-org/no-such-model-xyz")
    message = str(info.value)
    assert "preferthinker-nonexistent-org/no-such-model-xyz" in message
    assert "hub" in message and "huggingface-cli download" in message
    assert isinstance(info.value, RuntimeError)


def test_directory_without_config_raises_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="config.json") as info:
        load_model_and_processor(tmp_path)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------------------------------------
# LoRA
# ------------------------------------------------------------------------------------------------


def _trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_lora_excludes_vision_by_default(tiny_dir):
    model, _ = load_model_and_processor(tiny_dir)
    peft_model = apply_lora(model, r=4, alpha=8)
    names = _trainable_names(peft_model)
    assert names and all("lora_" in n for n in names)
    assert not [n for n in names if ".visual." in n]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f"{proj}.lora_A" in n for n in names), proj


def test_lora_with_vision(tiny_dir):
    model, _ = load_model_and_processor(tiny_dir)
    peft_model = apply_lora(model, r=4, alpha=8, include_vision=True)
    visual = [n for n in _trainable_names(peft_model) if ".visual." in n]
    assert any("mlp.gate_proj.lora_A" in n for n in visual)
    assert any("attn.qkv.lora_A" in n for n in visual)
    assert any("attn.proj.lora_A" in n for n in visual)


def test_lora_config_for_trl():
    config = lora_config(r=8, alpha=16, dropout=0.0)
    assert config.r == 8 and config.lora_alpha == 16
    assert config.exclude_modules == modeling.VISION_EXCLUDE_REGEX
    assert lora_config(include_vision=True).exclude_modules is None


def test_peft_group_dict_through_loader(tiny_dir):
    group = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
             "include_vision": False}
    model, _ = load_model_and_processor(tiny_dir, peft=group, for_training=True)
    names = _trainable_names(model)
    assert names and all(("q_proj.lora" in n or "v_proj.lora" in n) and ".visual." not in n for n in names)
    model, _ = load_model_and_processor(tiny_dir, peft={**group, "enabled": False})
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_merge_lora_matches_adapted_model(tiny_dir, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = load_model_and_processor(tiny_dir, device="cpu")  # fp32 even where CUDA exists
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    # LoRA B starts at zero (adapter == identity); give it weights so the merge is really tested.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    peft_model.eval()
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    processor.save_pretrained(adapter_dir)

    inputs = _text_inputs(processor)
    with torch.no_grad():
        adapted = peft_model(**inputs).logits
    merged_dir = merge_lora(adapter_dir, tmp_path / "merged", base_path=tiny_dir)

    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    AutoProcessor.from_pretrained(merged_dir)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
    torch.testing.assert_close(merged_logits, adapted, atol=1e-5, rtol=0)

    # The adapter directory itself loads too (base taken from adapter_config.json).
    reloaded, _ = load_model_and_processor(adapter_dir, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, adapted, atol=1e-5, rtol=0)
    assert count_parameters(reloaded)["trainable"] == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Requires: [CUDA]")
def test_auto_settings_on_gpu(tiny_dir):
    model, processor = load_model_and_processor(tiny_dir, device="auto")
    assert model.device.type == "cuda"
    assert model.dtype == torch.bfloat16
    expected_attn = "sdpa"
    try:
        import flash_attn  # noqa: F401

        expected_attn = "flash_attention_2"
    except Exception:
        pass
    assert model.config._attn_implementation == expected_attn
    inputs = processor.apply_chat_template(
        [_preference_messages(1)] * 2,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        add_generation_prompt=True,
        processor_kwargs={"padding": True},
    ).to("cuda")
    assert inputs["image_grid_thw"].shape == (24, 3)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
