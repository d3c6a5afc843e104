"""SFT files in the forms users bring (ours / the official JSONL, a JSON list, LLaMA-Factory ShareGPT) load into the
same records; anything else is an error naming file, record and what was expected."""

from __future__ import annotations

import json

import pytest

from preferthinker import prompting
from preferthinker.data.schema import SchemaError, load_train_jsonl
from preferthinker.data.sft_formats import load_sft_records


def _user_text(rec: dict) -> str:
    """The official user message as one ShareGPT text with <image> placeholders, as LLaMA-Factory data writes it."""
    t = prompting.OFFICIAL_TEXTS
    return (t["pref"] + "<image>" * len(rec["prefered_images"]) + "\n" + t["nonpref"] + "<image>" * len(rec["non_prefered_images"])
            + "\n" + t["candidates"] + "\nImage A<image>\nImage B<image>\n" + t["final"])


def _sharegpt(rec: dict, root, *, messages: bool = True, absolute: bool = False) -> dict:
    paths = rec["prefered_images"] + rec["non_prefered_images"] + [rec["imageA"], rec["imageB"]]
    images = [str(root / p) if absolute else p for p in paths]
    cot = rec["conversations"][1]["value"]
    if messages:
        turns = [{"role": "system", "content": "You are PreferThinker."}, {"role": "user", "content": _user_text(rec)},
                 {"role": "assistant", "content": cot}]
        return {"messages": turns, "images": images}
    return {"conversations": [{"from": "human", "value": _user_text(rec)}, {"from": "gpt", "value": cot}], "images": images}


@pytest.fixture
def sft_file(mini_data):
    path = mini_data / "train" / "sft.jsonl"
    return path, [json.loads(line) for line in path.read_text().splitlines()[:4]], mini_data / "train" / "images"


def _key(r):
    return (r.image_a, r.image_b, r.preferred, r.non_preferred, r.label, r.response)


def test_every_supported_form_reads_to_the_same_records(sft_file, tmp_path):
    path, raw, root = sft_file
    want = [_key(r) for r in load_train_jsonl(path, root)[:4]]
    forms = {
        "ours.jsonl": "\n".join(json.dumps(r) for r in raw),
        "official_list.json": json.dumps(raw),
        "llamafactory.json": json.dumps([_sharegpt(r, root, absolute=True) for r in raw]),
        "sharegpt.jsonl": "\n".join(json.dumps(_sharegpt(r, root, messages=False)) for r in raw),
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        recs, form = load_sft_records(tmp_path / name, root)
        assert form == ("official" if name.startswith(("ours", "official")) else "sharegpt"), name
        assert [_key(r) for r in recs] == want, name
    assert recs[0].instruction == prompting.FINAL_INSTRUCTION


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r, root: {"question": "x", "answer": "Image A"}, "unrecognised SFT record"),
        (lambda r, root: {**_sharegpt(r, root), "images": _sharegpt(r, root)["images"][:-1]}, "placeholders"),
        (lambda r, root: {**_sharegpt(r, root), "messages": [{"role": "user", "content": "<image>" * 12}]}, "assistant turn"),
        (lambda r, root: {**_sharegpt(r, root), "images": ["/elsewhere/x.png"] + _sharegpt(r, root)["images"][1:]}, "not below the image root"),
        (lambda r, root: {**_sharegpt(r, root), "messages": [{"role": "user", "content": "<image>" * 8},
                                                            {"role": "assistant", "content": "<answer>Image A</answer>"}]}, "cannot tell the candidates"),
        (lambda r, root: {**_sharegpt(r, root), "messages": [{"role": "user", "content": _user_text(r)},
                                                            {"role": "assistant", "content": "pick <answer>Image A</answer> or <answer>Image B</answer>"}]},
         "label must be exactly"),
    ],
)
def test_bad_sft_records_name_file_and_record(sft_file, tmp_path, mutate, message):
    _, raw, root = sft_file
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_sharegpt(raw[0], root)) + "\n" + json.dumps(mutate(raw[1], root)) + "\n")
    with pytest.raises(SchemaError) as e:
        load_sft_records(bad, root)
    assert str(bad) in str(e.value) and "record 1" in str(e.value) and message in str(e.value), str(e.value)


def test_a_file_mixing_forms_or_empty_is_an_error(sft_file, tmp_path):
    _, raw, root = sft_file
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(raw[0]) + "\n" + json.dumps(_sharegpt(raw[1], root)) + "\n")
    with pytest.raises(SchemaError, match="record 1: record is sharegpt but the file started as official"):
        load_sft_records(mixed, root)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SchemaError, match="no records"):
        load_sft_records(tmp_path / "empty.jsonl", root)
