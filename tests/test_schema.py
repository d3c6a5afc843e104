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
        # an instruction text mentioning both answers was once read as "Image B" by a fallback search
        (lambda r: r.update(conversations=[{"value": "Answer <answer>Image A</answer> or <answer>Image B</answer>"}]),
         "conversations[0].value", "exactly 'Image A' or 'Image B'"),
        (lambda r: r.update(conversations=[{"value": "<think>x</think><answer>Image A</answer>"}]), "conversations[0].value", "exactly"),
        (lambda r: r.update(non_prefered_images="n1.png"), "non_prefered_images", "list of strings"),
        (lambda r: r.pop("prefered_images"), "prefered_images", "missing key"),
        (lambda r: r.update(imageA="missing.png"), "imageA", "does not exist"),
        (lambda r: r.update(imageA="../../../etc/passwd"), "imageA", "outside the image root"),
        (lambda r: r.update(imageA="sub/../../a.png"), "imageA", "outside the image root"),
        (lambda r: r.update(imageA="/etc/passwd"), "imageA", "outside the image root"),
        (lambda r: r.update(prefer_attributes=["Pink"]), "prefer_attributes", ""),
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


@pytest.mark.parametrize("value, label", [("Image A", "Image A"), (" Image B\n", "Image B"), ("<answer>Image A</answer>", "Image A"),
                                          ("<answer> Image B </answer>", "Image B")])
def test_bench_labels_bare_label_or_bare_answer_block(bench, value, label):
    _, path, rec = bench
    _write(path, [dict(rec, conversations=[{"value": value}])])
    assert load_bench(path)[0].label == label


def test_train_response_label_is_its_only_closing_answer(bench):
    """A CoT response ends with its one answer block; an instruction that mentions both answers is no label."""
    _, path, rec = bench
    jl = path.parent / "t.jsonl"
    ok = dict(rec, conversations=[{"value": "q"}, {"value": "<think>A(3) B(4)</think>\n<answer>Image B</answer>\n"}])
    jl.write_text(json.dumps(ok) + "\n")
    assert load_train_jsonl(jl)[0].label == "Image B"
    for bad in ("answer with <answer>Image A</answer> or <answer>Image B</answer>", "<answer>Image A</answer> because ...", "Image C"):
        jl.write_text(json.dumps(dict(rec, conversations=[{"value": "q"}, {"value": bad}])) + "\n")
        with pytest.raises(SchemaError, match=r"record 0: field 'conversations\[1\].value': label must be exactly"):
            load_train_jsonl(jl)


def test_what_the_official_script_tolerates_is_a_counted_warning(bench):
    """Empty reference list, identical candidates, a profile lacking an element: loaded, warned, counted."""
    from preferthinker.data.schema import WARN_EMPTY_REFS, WARN_PARTIAL_PROFILE, WARN_SAME_CANDIDATES, warning_counts

    _, path, rec = bench
    _write(path, [rec, dict(rec, prefered_images=[]), dict(rec, imageB="a.png"), dict(rec, prefer_attributes={"Color": "Pink"}),
                  dict(rec, prefer_attributes=PREF, non_prefered_images=[])])
    recs = load_bench(path)
    assert [r.warnings for r in recs] == [[], [WARN_EMPTY_REFS], [WARN_SAME_CANDIDATES], [WARN_PARTIAL_PROFILE], [WARN_EMPTY_REFS]]
    assert recs[3].prefer_attributes is None and recs[4].prefer_attributes == PREF
    assert warning_counts(recs) == {WARN_EMPTY_REFS: 2, WARN_PARTIAL_PROFILE: 1, WARN_SAME_CANDIDATES: 1}
    assert recs[1].swapped().warnings == [WARN_EMPTY_REFS]


def _hub_snapshot(src_root, dest):
    """Lay out ``src_root`` as a hub cache: blobs/<sha> files and snapshots/<rev>/... relative symlinks to them."""
    import hashlib
    import os

    blobs, snap = dest / "blobs", dest / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    for f in sorted(p for p in src_root.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / f.relative_to(src_root)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def test_hub_snapshot_symlinks_are_followed_but_paths_cannot_climb_out(bench, tmp_path):
    from preferthinker.data.schema import resolve_image

    root, _, rec = bench
    snap = _hub_snapshot(root, tmp_path / "hub")
    path = snap / "data" / "SP_ID" / "SP_ID.json"
    assert path.is_symlink() and (snap / "data" / "SP_ID" / "images" / "a.png").resolve().parent.name == "blobs"
    assert [r.label for r in load_bench(path)] == ["Image B", "Image A"]
    images = snap / "data" / "SP_ID" / "images"
    assert resolve_image(images, "a.png").read_bytes() == (root / "data" / "SP_ID" / "images" / "a.png").read_bytes()
    for bad in ("../../../../blobs/x", "/etc/passwd", "../images/a.png"):
        with pytest.raises(SchemaError, match="outside the image root"):
            resolve_image(images, bad)
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(SchemaError, match="broken symlink"):
        resolve_image(images, "gone.png")


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
