"""Per-user Pick-a-Pic benchmark builder, on a small synthetic export built here (nothing binary committed).

The fixture mimics the real v2 schema: 3 users + noise rows (tie, unlabelled, not-different,
duplicate ranking_id, one image compared with itself, a repeated image pair), rows written out of
time order, tiny JPEG bytes in jpg_0/jpg_1.
"""

import io
import json
import random
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from preferthinker.data.pickapic import build_pickapic_benchmark, generator_oracle_accuracy, main

T0 = datetime(2023, 5, 1, 12, 0, 0)
K = 5
OFFICIAL_KEYS = {"imageA", "imageB", "prefered_images", "non_prefered_images", "conversations",
                 "user_id", "prompt", "ranking_id", "model_A", "model_B", "reference_prompt_list"}


def jpeg(seed: int) -> bytes:
    rnd = random.Random(seed)
    im = Image.new("RGB", (16, 16), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    im.putpixel((seed % 16, (seed // 16) % 16), (255 - seed % 256, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def build_rows():
    """Return (rows, expected) for the synthetic export."""
    rows = []
    rid = [1000]

    def add(user, minute, caption, uid0, uid1, label0, model0="sdxl", model1="sd21", **kw):
        rid[0] += 1
        r = {
            "ranking_id": rid[0], "user_id": user, "caption": caption,
            "created_at": T0 + timedelta(minutes=minute),
            "image_0_uid": uid0, "image_1_uid": uid1, "model_0": model0, "model_1": model1,
            "label_0": float(label0), "label_1": 1.0 - float(label0),
            "best_image_uid": uid0 if label0 == 1 else (uid1 if label0 == 0 else ""),
            "has_label": True, "are_different": True, "num_example_per_prompt": 1,
        }
        r.update(kw)
        rows.append(r)
        return r

    # user 101: always prefers the sdxl image; 14 clean pairs, 2 of the later ones are not usable as tests
    for k in range(14):
        sdxl_first = k % 2 == 0
        caption = f"u101 prompt {k}"
        if k == 6:
            caption = "U101 prompt 1 "  # same prompt as reference 1 (case/space-insensitive) -> not a test pair
        uid0, uid1 = f"a101_{k}_0", f"a101_{k}_1"
        if k == 7:
            uid0 = "a101_2_0"  # reuses a reference image -> not a test pair
        add(101, 10 * k, caption, uid0, uid1, 1 if sdxl_first else 0,
            model0="sdxl" if sdxl_first else "sd21", model1="sd21" if sdxl_first else "sdxl")
    # user 202: 11 clean pairs, mixed preferences, two same-generator pairs
    for k in range(11):
        same = k in (6, 8)
        add(202, 10 * k + 3, f"u202 prompt {k}", f"b202_{k}_0", f"b202_{k}_1", 1 if k % 3 == 0 else 0,
            model0="dreamlike", model1="dreamlike" if same else "sdxl")
    # user 303: too few pairs
    for k in range(4):
        add(303, 10 * k + 5, f"u303 prompt {k}", f"c303_{k}_0", f"c303_{k}_1", 1)
    # noise, all for user 202 at the end of time
    add(202, 500, "tie prompt", "n_tie_0", "n_tie_1", 0.5)
    add(202, 501, "unlabelled", "n_nl_0", "n_nl_1", 1, has_label=False)
    add(202, 502, "same images", "n_nd_0", "n_nd_1", 1, are_different=False)
    dup = dict(rows[20], created_at=T0 + timedelta(minutes=503))  # duplicate ranking_id (a user 202 row)
    rows.append(dup)
    add(202, 504, "self pair", "n_self", "n_self", 1)
    add(202, 505, "repeat pair", "b202_9_1", "b202_9_0", 0)  # same images as u202 pair 9, swapped
    for r in rows:
        if "jpg_0" not in r:
            r["jpg_0"] = jpeg(hash_uid(r["image_0_uid"]))
            r["jpg_1"] = jpeg(hash_uid(r["image_1_uid"]))
    random.Random(0).shuffle(rows)  # the builder must sort by created_at itself
    return rows


def hash_uid(uid: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(uid))


def write_parquet(rows, path, drop=()):
    cols = [c for c in rows[0] if c not in drop]
    table = pa.table({c: [r[c] for r in rows] for c in cols})
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def fixture_rows():
    return build_rows()


@pytest.fixture(scope="module")
def parquet_path(tmp_path_factory, fixture_rows):
    path = write_parquet(fixture_rows, tmp_path_factory.mktemp("pap") / "pickapic_small.parquet")
    assert path.stat().st_size < 200_000
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, parquet_path):
    out = tmp_path_factory.mktemp("bench")
    stats = build_pickapic_benchmark(parquet_path, out, n_refs=K, seed=0)
    data = json.loads((out / "data" / "PICKAPIC" / "PICKAPIC.json").read_text())
    return out, stats, data


def test_official_layout_and_schema(built):
    out, stats, data = built
    root = out / "data" / "PICKAPIC"
    assert (root / "stats.json").is_file() and (root / "split_ids.jsonl").is_file()
    assert isinstance(data, list) and len(data) == stats["pairs"]
    for r in data:
        assert OFFICIAL_KEYS <= set(r)
        assert r["conversations"][0]["from"] == "gpt" and r["conversations"][0]["value"] in ("Image A", "Image B")
        assert len(r["prefered_images"]) == K and len(r["non_prefered_images"]) == K
        assert len(r["reference_prompt_list"]) == K
        for rel in [r["imageA"], r["imageB"], *r["prefered_images"], *r["non_prefered_images"]]:
            assert "/" not in rel and rel.endswith(".jpg")
            with Image.open(root / "images" / rel) as im:
                assert im.size == (16, 16)
    # the project's own bench loader accepts it
    from preferthinker.data.schema import load_bench

    assert len(load_bench(root / "PICKAPIC.json")) == len(data)


def test_users_pairs_and_filters(built, fixture_rows):
    _, stats, data = built
    assert {r["user_id"] for r in data} == {"101", "202"}
    per_user = {u: sum(r["user_id"] == u for r in data) for u in ("101", "202")}
    assert per_user == {"101": 14 - K - 2, "202": 11 - K}
    assert stats["users"] == 2 and stats["pairs"] == 13
    assert stats["users_dropped_too_few_pairs"] == 1  # user 303
    f = stats["filters"]
    assert f["rows_read"] == len(fixture_rows) == 35
    assert (f["ties"], f["dropped_no_label"], f["dropped_not_different"]) == (1, 1, 1)
    assert (f["dropped_duplicate_ranking_id"], f["dropped_same_image"], f["dropped_duplicate_image_pair"]) == (1, 1, 1)
    assert stats["tie_rate"] == pytest.approx(1 / 33)  # 1 tie among the 33 labelled, different rows
    assert stats["same_generator_share"] == pytest.approx(2 / 13)


def test_references_are_earliest_and_disjoint_from_tests(built, fixture_rows):
    _, _, data = built
    by_id = {r["ranking_id"]: r for r in fixture_rows}
    for r in data:
        user = int(r["user_id"])
        clean = sorted((x for x in fixture_rows if x["user_id"] == user and x["created_at"] < T0 + timedelta(minutes=400)),
                       key=lambda x: x["created_at"])
        refs = clean[:K]
        assert r["reference_prompt_list"] == [x["caption"] for x in refs]
        liked = [(x["image_0_uid"] if x["label_0"] == 1 else x["image_1_uid"]) + ".jpg" for x in refs]
        disliked = [(x["image_1_uid"] if x["label_0"] == 1 else x["image_0_uid"]) + ".jpg" for x in refs]
        assert r["prefered_images"] == liked and r["non_prefered_images"] == disliked
        # disjointness
        assert r["prompt"].strip().lower() not in {p.strip().lower() for p in r["reference_prompt_list"]}
        assert not {r["imageA"], r["imageB"]} & set(r["prefered_images"] + r["non_prefered_images"])
        # the label points at the winner of the source row
        src = by_id[r["ranking_id"]]
        winner = src["image_0_uid"] if src["label_0"] == 1 else src["image_1_uid"]
        shown = r["imageA"] if r["conversations"][0]["value"] == "Image A" else r["imageB"]
        assert shown == winner + ".jpg"
        assert {r["model_A"], r["model_B"]} == {src["model_0"], src["model_1"]}


def test_labels_balanced_and_seeded(built, parquet_path, tmp_path):
    _, stats, data = built
    n_a = sum(r["conversations"][0]["value"] == "Image A" for r in data)
    assert abs(n_a - (len(data) - n_a)) <= 1 and stats["label_a_share"] == pytest.approx(n_a / len(data))
    again = build_pickapic_benchmark(parquet_path, tmp_path / "again", n_refs=K, seed=0)
    assert json.loads((tmp_path / "again/data/PICKAPIC/PICKAPIC.json").read_text()) == data
    other = build_pickapic_benchmark(parquet_path, tmp_path / "other", n_refs=K, seed=1)
    data1 = json.loads((tmp_path / "other/data/PICKAPIC/PICKAPIC.json").read_text())
    assert [r["conversations"][0]["value"] for r in data1] != [r["conversations"][0]["value"] for r in data]
    assert other["pairs"] == again["pairs"]


def test_refs_cap_and_test_after(parquet_path, tmp_path):
    s = build_pickapic_benchmark(parquet_path, tmp_path / "k3", n_refs=3, max_test=2, min_pairs=5)
    data = json.loads((tmp_path / "k3/data/PICKAPIC/PICKAPIC.json").read_text())
    assert all(len(r["prefered_images"]) == 3 for r in data)
    assert s["pairs_per_user"]["max"] == 2 and s["users"] == 2
    s = build_pickapic_benchmark(parquet_path, tmp_path / "late", test_after=(T0 + timedelta(minutes=85)).isoformat())
    data = json.loads((tmp_path / "late/data/PICKAPIC/PICKAPIC.json").read_text())
    assert s["pairs"] == 5 + 2 and all(r["created_at"] > "2023-05-01T13:25" for r in data)


def test_generator_oracle(built):
    _, stats, data = built
    # user 101 always liked sdxl and every one of its test pairs is sdxl vs sd21 -> oracle right
    u101 = [r for r in data if r["user_id"] == "101"]
    assert generator_oracle_accuracy(u101)["accuracy"] == 1.0
    hand = [
        {"prefered_models": ["x", "x", "y"], "model_A": "x", "model_B": "y", "conversations": [{"value": "Image A"}]},
        {"prefered_models": ["x", "x", "y"], "model_A": "y", "model_B": "x", "conversations": [{"value": "Image A"}]},
        {"prefered_models": ["x"], "model_A": "z", "model_B": "z", "conversations": [{"value": "Image B"}]},
        {"prefered_models": ["x"], "model_A": "y", "model_B": "z", "conversations": [{"value": "Image B"}]},
    ]
    o = generator_oracle_accuracy(hand)
    assert o["n"] == 4 and o["n_decided"] == 2 and o["coverage"] == 0.5
    assert o["accuracy_decided"] == 0.5 and o["accuracy"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert o["n_different_generator"] == 3 and o["accuracy_different_generator"] == pytest.approx(1.5 / 3)
    assert stats["generator_oracle"]["n"] == 13
    with pytest.raises(ValueError, match="prefered_models"):
        generator_oracle_accuracy([{"model_A": "x", "model_B": "y"}])


def test_corrupt_and_identical_images_are_dropped(fixture_rows, tmp_path):
    rows = [dict(r) for r in fixture_rows]
    tests202 = sorted((r for r in rows if r["user_id"] == 202 and r["created_at"] < T0 + timedelta(minutes=400)),
                      key=lambda r: r["created_at"])
    tests202[7]["jpg_0"] = tests202[7]["jpg_0"][:40]           # truncated JPEG
    tests202[8]["jpg_1"] = tests202[8]["jpg_0"]                # two uids, byte-identical images
    refs101 = sorted((r for r in rows if r["user_id"] == 101), key=lambda r: r["created_at"])
    refs101[0]["jpg_1"] = b"not an image"                     # a bad reference image
    path = write_parquet(rows, tmp_path / "bad.parquet")
    s = build_pickapic_benchmark(path, tmp_path / "out")
    data = json.loads((tmp_path / "out/data/PICKAPIC/PICKAPIC.json").read_text())
    ids = {r["ranking_id"] for r in data}
    assert tests202[7]["ranking_id"] not in ids and tests202[8]["ranking_id"] not in ids
    assert s["pairs_dropped_identical_bytes"] == 1 and s["pairs_dropped_bad_image"] == 2
    u101 = [r for r in data if r["user_id"] == "101"]
    # the bad reference pair is replaced by the next earliest pair
    assert u101[0]["reference_prompt_list"][0] == "u101 prompt 1"
    assert s["selection_rounds"] >= 2


def test_jsonl_no_images_export_with_images_dir(fixture_rows, tmp_path):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    lines = []
    for r in fixture_rows:
        for side in (0, 1):
            (img_dir / f"{r[f'image_{side}_uid']}.jpg").write_bytes(r[f"jpg_{side}"])
        row = {k: v for k, v in r.items() if k not in ("jpg_0", "jpg_1")}
        row["created_at"] = r["created_at"].isoformat()
        lines.append(json.dumps(row))
    src = tmp_path / "no_images.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"no_images\.jsonl.*jpg_0"):
        build_pickapic_benchmark(src, tmp_path / "x")
    s = build_pickapic_benchmark(src, tmp_path / "ok", images_dir=img_dir)
    assert s["users"] == 2 and s["pairs"] == 13


def test_bad_inputs_raise_named_errors(fixture_rows, tmp_path):
    missing = write_parquet(fixture_rows, tmp_path / "nolabel.parquet", drop=("label_0",))
    with pytest.raises(ValueError, match=r"nolabel\.parquet.*'label_0'"):
        build_pickapic_benchmark(missing, tmp_path / "o1")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    with pytest.raises(ValueError, match=r"garbage\.parquet: unreadable"):
        build_pickapic_benchmark(garbage, tmp_path / "o2")
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("[{")
    with pytest.raises(ValueError, match=r"broken\.json: unreadable JSON"):
        build_pickapic_benchmark(bad_json, tmp_path / "o3")
    rows = [{k: (v.isoformat() if k == "created_at" else v) for k, v in r.items() if not k.startswith("jpg")}
            for r in fixture_rows]
    del rows[3]["user_id"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"partial\.json: missing required column 'user_id' in row 3"):
        build_pickapic_benchmark(partial, tmp_path / "o4", images_dir=tmp_path)
    good = write_parquet(fixture_rows, tmp_path / "good.parquet")
    with pytest.raises(ValueError, match=r"good\.parquet: no user survived"):
        build_pickapic_benchmark(good, tmp_path / "o5", min_pairs=50)
    with pytest.raises(ValueError, match="no such file"):
        build_pickapic_benchmark(tmp_path / "absent.parquet", tmp_path / "o6")
    with pytest.raises(ValueError, match="min_pairs"):
        build_pickapic_benchmark(good, tmp_path / "o7", n_refs=8, min_pairs=5)


def test_cli(parquet_path, tmp_path, capsys):
    assert main(["--input", str(parquet_path), "--out", str(tmp_path / "cli"), "--refs", "4", "--min-pairs", "8"]) == 0
    data = json.loads((tmp_path / "cli/data/PICKAPIC/PICKAPIC.json").read_text())
    assert all(len(r["prefered_images"]) == 4 for r in data)
    assert "pairs from 2 users" in capsys.readouterr().out
    assert main(["--input", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "cli2")]) == 2
    assert "nope.parquet" in capsys.readouterr().err


def test_hf_layout_recursive_split_and_cross_file_dedup(fixture_rows, tmp_path):
    """data/<split>-NNNNN-of-NNNNN.parquet shards, found recursively: one split at a time (mixing is an error),
    a ranking_id repeated in another shard counted once, the same benchmark as from one file."""
    rows = sorted(fixture_rows, key=lambda r: r["ranking_id"])
    shards = tmp_path / "pickapic_v2" / "data"
    shards.mkdir(parents=True)
    half = len(rows) // 2
    write_parquet(rows[:half], shards / "train-00000-of-00002.parquet")
    write_parquet(rows[half:] + rows[:3], shards / "train-00001-of-00002.parquet")  # 3 rows again in the second shard
    (tmp_path / "pickapic_v2" / "test").mkdir()
    write_parquet(rows[:12], tmp_path / "pickapic_v2" / "test" / "part-0.parquet")
    with pytest.raises(ValueError, match=r"several splits \(test, train\); pass --split"):
        build_pickapic_benchmark(tmp_path / "pickapic_v2", tmp_path / "x")
    with pytest.raises(ValueError, match=r"no file of split 'validation'"):
        build_pickapic_benchmark(tmp_path / "pickapic_v2", tmp_path / "x", split="validation")
    s = build_pickapic_benchmark(tmp_path / "pickapic_v2", tmp_path / "out", split="train", n_refs=K)
    single = build_pickapic_benchmark(write_parquet(rows, tmp_path / "one.parquet"), tmp_path / "one", n_refs=K)
    assert len(s["input"]) == 2 and s["filters"]["dropped_duplicate_ranking_id"] == single["filters"]["dropped_duplicate_ranking_id"] + 3
    a, b = ((p / "data/PICKAPIC/PICKAPIC.json").read_text() for p in (tmp_path / "out", tmp_path / "one"))
    assert json.loads(a) == json.loads(b)


def test_max_users_caps_and_writes_only_their_images(parquet_path, tmp_path):
    full = build_pickapic_benchmark(parquet_path, tmp_path / "all", n_refs=K)
    s = build_pickapic_benchmark(parquet_path, tmp_path / "one", n_refs=K, max_users=1)
    data = json.loads((tmp_path / "one/data/PICKAPIC/PICKAPIC.json").read_text())
    assert full["users"] == 2 and s["users"] == 1 and s["users_dropped_over_cap"] == 1
    assert len({r["user_id"] for r in data}) == 1
    on_disk = {p.name for p in (tmp_path / "one/data/PICKAPIC/images").iterdir()}
    named = {x for r in data for x in [r["imageA"], r["imageB"], *r["prefered_images"], *r["non_prefered_images"]]}
    assert on_disk == named and s["images_written"] == len(named)
    again = build_pickapic_benchmark(parquet_path, tmp_path / "again", n_refs=K, max_users=1)
    assert again["users"] == 1 and json.loads((tmp_path / "again/data/PICKAPIC/PICKAPIC.json").read_text()) == data
    with pytest.raises(ValueError, match="max_users"):
        build_pickapic_benchmark(parquet_path, tmp_path / "bad", max_users=0)


def test_images_stream_from_large_row_groups_in_small_batches(fixture_rows, tmp_path, monkeypatch):
    """A shard written as one row group is read in batches of IMAGE_BATCH rows (never the whole group's bytes),
    and row groups whose uids name no wanted image are not read for bytes at all."""
    import preferthinker.data.pickapic_io as pio

    seen: list[int] = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        for batch in original(self, *a, **kw):
            if any(name.startswith("jpg_") for name in batch.schema.names):
                seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pio, "IMAGE_BATCH", 4)
    rows = sorted(fixture_rows, key=lambda r: r["ranking_id"])
    noise = [dict(r, ranking_id=r["ranking_id"] + 10_000, user_id=999, has_label=False,
                  image_0_uid=f"z{i}_0", image_1_uid=f"z{i}_1") for i, r in enumerate(rows)]
    path = tmp_path / "grouped.parquet"
    table = pa.table({c: [r[c] for r in rows + noise] for c in rows[0]})
    pq.write_table(table, path, row_group_size=len(rows))  # group 0: the real rows, group 1: rows nobody wants
    s = build_pickapic_benchmark(path, tmp_path / "out", n_refs=K)
    assert s["users"] == 2 and seen and max(seen) <= 4
    assert sum(seen) <= 2 * len(rows) * s["selection_rounds"]  # one column at a time; group 1's bytes were never read
