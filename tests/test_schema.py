"""Official schema I/O: round trips and a clear error for each kind of bad input."""

import json

import pytest
from PIL import Image

from preferthinker.data.schema import (
    PreferenceRecord,
    SchemaError,
    load_bench,
    load_train_jsonl,
    record_to_dict,
    subset_paths,
    write_bench,
    write_train_jsonl,
)

PREF = {"Art Styles": "Pixel Art", "Color": "Pink", "Artistic Medium": "Silkscreen", "Saturation": "Muted", "Detail": "Fine"}


@pytest.fixture
def bench(tmp_path):
    """An official-layout bench: data/SP_ID/SP_ID.json + data/SP_ID/images/*.png."""
    sub = tmp_path / "data" / "SP_ID"
    (sub / "images").mkdir(parents=True)
    for name in ["a", "b", "p1", "p2", "n1", "n2"]:
        Image.new("RGB", (32, 32), (10, 20, 30)).save(sub / "images" / f"{name}.png")
    rec = {
        "imageA": "a.png", "imageB": "b.png",
        "prefered_images": ["p1.png", "p2.png"], "non_prefered_images": ["n1.png", "n2.png"],
        "conversations": [{"from": "gpt", "value": "Image B"}],
        "some_future_key": {"kept": True},
    }
    path = sub / "SP_ID.json"
    path.write_text(json.dumps([rec, dict(rec, imageA="b.png", imageB="a.png", conversations=[{"value": "Image A"}])]))
    return tmp_path, path, rec


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_load_official_bench_unchanged(bench):
    root, path, _ = bench
    recs = load_bench(path)
    assert [r.label for r in recs] == ["Image B", "Image A"]
    assert recs[0].preferred == ["p1.png", "p2.png"] and recs[0].extra == {"some_future_key": {"kept": True}}
    assert subset_paths(root) == {"SP_ID": path}


def test_bench_round_trip(bench, tmp_path):
    _, path, _ = bench
    recs = load_bench(path)
    out = write_bench(recs, path.parent / "copy.json")
    again = load_bench(out, image_root=path.parent / "images")
    assert again == recs
    d = record_to_dict(recs[0])
    assert set(d) >= {"imageA", "imageB", "prefered_images", "non_prefered_images", "conversations"}
    assert d["conversations"][0]["value"] == "Image B"


def test_train_jsonl_round_trip(bench):
    _, path, _ = bench
    rec = PreferenceRecord(
        image_a="a.png", image_b="b.png", preferred=["p1.png"], non_preferred=["n1.png"], label="Image A",
        user_id="u1", prefer_attributes=PREF, non_prefer_attributes=dict(PREF, Color="Teal"),
        reference_prompt_list=["a cat"], response="<answer>Image A</answer>", instruction="Decide.",
    )
    cot = PreferenceRecord(**{**rec.__dict__, "response": "...<think>x</think>\n\n<answer>Image B</answer>", "label": "Image B"})
    out = write_train_jsonl([rec, cot], path.parent / "train.jsonl")
    back = load_train_jsonl(out, image_root=path.parent / "images")
    assert back == [rec, cot]
    line = json.loads(out.read_text().splitlines()[0])
    assert line["conversations"][1]["value"] == "<answer>Image A</answer>" and line["prefer_attributes"]["Artistic Medium"] == "Silkscreen"


def test_swapped_exchanges_candidates_and_label():
    rec = PreferenceRecord("a.png", "b.png", ["p"], ["n"], "Image A", extra={"true_scores_a": [5] * 5, "true_scores_b": [1] * 5})
    s = rec.swapped()
    assert (s.image_a, s.image_b, s.label) == ("b.png", "a.png", "Image B")
    assert s.extra["true_scores_a"] == [1] * 5 and rec.extra["true_scores_a"] == [5] * 5


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda r: r.pop("imageA"), "imageA", "missing key"),
        (lambda r: r.update(conversations=[{"value": "image b"}]), "conversations[0].value", "exactly 'Image A' or 'Image B'"),
        (lambda r: r.update(conversations=[{"value": "Image C"}]), "conversations[0].value", "exactly"),
        (lambda r: r.update(conversations=[]), "conversations", "non-empty"),
        (lambda r: r.update(prefered_images=[]), "prefered_images", "empty reference list"),
        (lambda r: r.update(non_prefered_images="n1.png"), "non_prefered_images", "list of strings"),
        (lambda r: r.update(imageB="a.png"), "imageB", "both candidates"),
        (lambda r: r.update(imageA="missing.png"), "imageA", "does not exist"),
        (lambda r: r.update(imageA="../../../etc/passwd"), "imageA", "outside the image root"),
        (lambda r: r.update(imageA="/etc/passwd"), "imageA", "outside the image root"),
        (lambda r: r.update(prefer_attributes={"Color": "Pink"}), "prefer_attributes", "lacks element"),
    ],
)
def test_bad_records_name_file_record_and_field(bench, mutate, field, message):
    _, path, rec = bench
    bad = json.loads(json.dumps(rec))
    mutate(bad)
    _write(path, [rec, bad])
    with pytest.raises(SchemaError) as e:
        load_bench(path)
    msg = str(e.value)
    assert str(path) in msg and "record 1" in msg and repr(field) in msg and message in msg, msg


def test_malformed_json_and_wrong_top_level(bench):
    _, path, rec = bench
    path.write_text('[{"imageA": "a.png",')
    with pytest.raises(SchemaError, match="malformed JSON at line 1"):
        load_bench(path)
    _write(path, {"imageA": "a.png"})
    with pytest.raises(SchemaError, match="JSON list"):
        load_bench(path)
    with pytest.raises(SchemaError, match="does not exist"):
        load_bench(path.parent / "nope.json")
    jl = path.parent / "t.jsonl"
    jl.write_text(json.dumps({**rec, "conversations": [{"value": "q"}, {"value": "<answer>Image A</answer>"}]}) + "\n{oops\n")
    with pytest.raises(SchemaError, match="line 2"):
        load_train_jsonl(jl, image_root=path.parent / "images")


def test_corrupt_image_is_not_a_schema_problem_but_missing_is(bench):
    """The schema checks existence and containment; decoding is prompting.load_image's job."""
    _, path, _ = bench
    (path.parent / "images" / "a.png").write_text("not a png")
    assert len(load_bench(path)) == 2


def test_subset_paths_errors(bench, tmp_path):
    root, _, _ = bench
    with pytest.raises(SchemaError, match=r"\['MP_OD'\] not found; present: \['SP_ID'\]"):
        subset_paths(root, ["SP_ID", "MP_OD"])
    with pytest.raises(SchemaError, match="no data/ folder"):
        subset_paths(tmp_path / "data")
