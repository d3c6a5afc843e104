"""Prompt construction and image loading (Qwen2.5-VL pixel conventions, bad images)."""

import numpy as np
import pytest
from PIL import Image

from preferthinker import prompting
from preferthinker.prompting import ImageLoadError, build_messages, load_image, smart_resize_dims


def _img(w=64, h=48, color=(200, 10, 10)):
    return Image.new("RGB", (w, h), color)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_official_order_for_1_to_5_references(k):
    liked = [f"L{i}" for i in range(k)]
    disliked = [f"D{i}" for i in range(k)]
    msgs, images = build_messages(liked, disliked, "A", "B", style="official", system="official")
    assert [m["role"] for m in msgs] == ["system", "user"]
    content = msgs[1]["content"]
    kinds = [(c["type"], c.get("text", c.get("image"))) for c in content]
    expected = [("text", prompting.PREF_INTRO)] + [("image", x) for x in liked]
    expected += [("text", prompting.NONPREF_INTRO)] + [("image", x) for x in disliked]
    expected += [("text", prompting.CANDIDATES_INTRO), ("text", "Image A"), ("image", "A"), ("text", "Image B"), ("image", "B")]
    expected += [("text", prompting.FINAL_INSTRUCTION)]
    assert kinds == expected
    assert images == liked + disliked + ["A", "B"]
    assert "ArtisticMedium" in msgs[0]["content"][0]["text"]


def test_only_first_five_references_and_placeholders():
    msgs, images = build_messages(list(range(8)), list(range(10, 17)), "A", "B", style="compact", system="none", embed_images=False)
    assert [m["role"] for m in msgs] == ["user"]
    assert images == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, "A", "B"]
    blocks = [c for c in msgs[0]["content"] if c["type"] == "image"]
    assert len(blocks) == 12 and all(set(b) == {"type"} for b in blocks)


def test_an_empty_reference_side_leaves_out_the_reference_part_as_the_official_script():
    """eval_PreferThinker.py adds the reference texts and images only `if preferred_paths and non_preferred_paths`."""
    for liked, disliked in (([], ["x"]), (["x"], []), ([], [])):
        msgs, images = build_messages(liked, disliked, "A", "B", style="official_eval", system="official_eval")
        texts = [c.get("text") for c in msgs[1]["content"]]
        assert images == ["A", "B"] and texts == [prompting.CANDIDATES_INTRO, "Image A", None, "Image B", None, prompting.FINAL_INSTRUCTION]
    with pytest.raises(ValueError, match="style"):
        build_messages(["x"], ["y"], "A", "B", style="fancy")


def test_official_texts_are_shipped_verbatim_with_their_source():
    """Both official system prompts ship as data files; they differ in wording (the eval copy says "five key
    profile" and writes "Artistic Medium"), and the README next to them names the source file."""
    from importlib import resources

    train, evaluation = prompting.system_prompt("official"), prompting.system_prompt("official_eval")
    assert train != evaluation
    assert '"ArtisticMedium"' in train and "five key attributes" in train
    assert '"Artistic Medium"' in evaluation and "five key profile" in evaluation and '"ArtisticMedium"' not in evaluation
    assert evaluation.startswith("\nThe user provides") and len(evaluation) > 5000
    assert prompting.CANDIDATES_INTRO == "Then, given the following  two candidate images: Image A and Image B."
    assert "preferference" in prompting.FINAL_INSTRUCTION
    readme = resources.files("preferthinker.prompts").joinpath("README.md").read_text("utf-8")
    assert "Shengqi77/PreferThinker" in readme and "eval_PreferThinker.py" in readme and "official_eval_system_prompt.txt" in readme


def _official_eval_messages(x: dict, image_root: str, system_prompt: str) -> list[dict]:
    """The official eval script's construction (eval_PreferThinker.py, num_history=5), rewritten from its
    description: image items carry file:// URLs and "text"/"label" keys, which the Qwen template does not render."""
    t = prompting.OFFICIAL_TEXTS
    content = []
    pref, nonpref = x["prefered_images"], x["non_prefered_images"]
    if pref and nonpref:
        content.append({"type": "text", "text": t["pref"]})
        for i, p in enumerate(pref[:5]):
            content.append({"type": "image", "image": f"file://{image_root}/{p}", "text": f"Preferred Image {i + 1}.", "label": f"Preferred Image {i + 1}."})
        content.append({"type": "text", "text": t["nonpref"]})
        for i, p in enumerate(nonpref[:5]):
            content.append({"type": "image", "image": f"file://{image_root}/{p}", "text": f"Non-Preferred Image {i + 1}.",
                            "label": f"Non-Preferred Image {i + 1}."})
    content.append({"type": "text", "text": t["candidates"]})
    if x["imageA"] and x["imageB"]:
        content += [{"type": "text", "text": "Image A"}, {"type": "image", "image": f"file://{image_root}/{x['imageA']}"},
                    {"type": "text", "text": "Image B"}, {"type": "image", "image": f"file://{image_root}/{x['imageB']}"}]
    content.append({"type": "text", "text": t["final"]})
    return [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}, {"role": "user", "content": content}]


def test_official_eval_prompt_renders_like_the_official_eval_script(mini_data, tiny_model, tmp_path):
    """prompt=official_eval renders one bench record to the same chat-template string as the official construction:
    same system prompt, texts, order, and "Picture N: " numbering of the 12 images (add_vision_id=True)."""
    import json

    from transformers import AutoProcessor

    from tests.conftest import compose
    from preferthinker.data.loading import PromptSpec, sample_inputs
    from preferthinker.data.schema import load_bench

    cfg = compose("eval", ["prompt=official_eval"])
    spec = PromptSpec.from_cfg(cfg.prompt, cfg.model)
    assert (spec.style, spec.system, spec.max_refs, spec.vision_ids) == ("official_eval", "official_eval", 5, True)
    bench = mini_data / "data" / "SP_ID" / "SP_ID.json"
    raw = json.loads(bench.read_text())[0]
    raw = dict(raw, prefered_images=(raw["prefered_images"] * 3)[:6], non_prefered_images=(raw["non_prefered_images"] * 3)[:7])
    one = tmp_path / "SP_ID.json"
    one.write_text(json.dumps([raw]))
    root = bench.parent / "images"
    rec = load_bench(one, image_root=root)[0]
    ours, images = sample_inputs(rec, root, spec, embed_images=True)
    processor = AutoProcessor.from_pretrained(tiny_model)
    render = lambda m: processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True, add_vision_id=spec.vision_ids)  # noqa: E731
    official = render(_official_eval_messages(raw, str(root), prompting.system_prompt("official_eval")))
    assert render(ours) == official
    assert len(images) == 12 and official.count("Picture ") == 12 and "Picture 12: <|vision_start|>" in official
    assert "Image A" + "Picture 11: " in official and "Preferred Image 1." not in official
    # training renders without vision ids, as TRL does in the released trainer
    assert "Picture 1:" not in processor.apply_chat_template(ours, tokenize=False, add_generation_prompt=True)


def test_chat_template_accepts_messages():
    """The stock Qwen2.5-VL template renders our messages with 12 vision blocks in order."""
    from transformers import Qwen2_5_VLProcessor  # noqa: F401  (template lives on the processor)
    from preferthinker.modeling import QWEN2_5_VL_CHAT_TEMPLATE as STOCK_CHAT_TEMPLATE
    import jinja2

    msgs, _ = build_messages(["l"] * 5, ["d"] * 5, "a", "b", style="official", system="compact")
    text = jinja2.Environment().from_string(STOCK_CHAT_TEMPLATE).render(messages=msgs, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 12
    assert text.index("Image A") < text.rindex("<|image_pad|>")
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "h, w, lo, hi, expected",
    [(56, 56, 56 * 56, 56 * 56, (56, 56)), (100, 80, 3136, 12544, (112, 84)), (1000, 1000, 3136, 12544, (112, 112)), (10, 10, 3136, 12544, (56, 56))],
)
def test_smart_resize(h, w, lo, hi, expected):
    rh, rw = smart_resize_dims(h, w, lo, hi)
    assert (rh, rw) == expected and rh % 28 == 0 and rw % 28 == 0 and lo <= rh * rw <= hi


def test_load_image_inputs(tmp_path):
    p = tmp_path / "x.png"
    _img(300, 200).save(p)
    a = load_image(p, 3136, 12544)
    b = load_image(_img(300, 200), 3136, 12544)
    c = load_image(np.asarray(_img(300, 200)), 3136, 12544)
    assert a.size == b.size == c.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(b), np.asarray(c))
    assert load_image(np.zeros((30, 30), np.float32)).size == (56, 56)  # grey float array, upscaled to min


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.png", what="record 3 field imageA")
    (tmp_path / "notimg.png").write_text("hello")
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(tmp_path / "notimg.png")
    good = tmp_path / "good.png"
    _img(200, 200).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageLoadError):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((4, 4, 7)))
    with pytest.raises(ImageLoadError, match="aspect"):
        load_image(Image.new("RGB", (5000, 10)))


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(prompting, "MAX_DECODE_PIXELS", 100 * 100)
    p = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(p)
    with pytest.raises(ImageLoadError, match="decode limit|bomb"):
        load_image(p)
