"""Dataset parsers: real names parse, bad files are quarantined with a reason, nothing is lost."""
from __future__ import annotations

import csv

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from reidaug.data.datasets import (
    PARSERS,
    QUARANTINE_REASONS,
    SKIP_REASONS,
    SPLITS,
    CUHK01Options,
    ParseResult,
    Record,
    check_images,
    decode_records,
    get_parser,
    parse_cuhk01,
    parse_cuhk03_np,
    parse_dataset,
    parse_dukemtmc_reid,
    parse_folder,
    parse_market1501,
    parse_msmt17,
    summary_table,
)
from reidaug.data.images import DecodedImage
from reidaug.errors import ConfigError, DataError, UnknownNameError

from corpus import bad_corpus as _bad_corpus, jpeg as _jpeg  # tests/corpus.py


def _all_files(root: Path) -> set[str]:
    """Every file, and every folder named like an image (which must be reported too)."""
    from reidaug.data.datasets import looks_like_image

    return {
        (Path(d) / f).relative_to(root).as_posix()
        for d, dirs, files in os.walk(root)
        for f in [*files, *(x for x in dirs if looks_like_image(x))]
    }


def _accounted(result: ParseResult) -> list[str]:
    return (
        [r.path for r in result.records]
        + [q.path for q in result.quarantined]
        + [s.path for s in result.skipped]
    )


def _assert_nothing_lost(root: Path, result: ParseResult, folder: str = "") -> None:
    """Every file under root/folder is exactly one record, quarantine or skip entry."""
    accounted = _accounted(result)
    assert len(accounted) == len(set(accounted)), "a file is in two lists"
    files = {f"{folder}/{p}" if folder else p for p in _all_files(root / folder)}
    assert set(accounted) == files


def _by_path(result: ParseResult) -> dict[str, str]:
    """path -> 'record' or the quarantine/skip reason."""
    out = {r.path: "record" for r in result.records}
    out.update({q.path: q.reason for q in result.quarantined})
    out.update({s.path: s.reason for s in result.skipped})
    return out


# ----------------------------------------------------------------------------- registry


def test_registry_lists_the_formats_and_suggests_near_names():
    assert set(PARSERS) == {
        "market1501", "dukemtmc-reid", "msmt17", "cuhk03-np", "cuhk01", "folder"
    }
    assert get_parser("cuhk01").options is CUHK01Options
    with pytest.raises(UnknownNameError) as info:
        get_parser("market")
    assert 'Did you mean "market1501"' in str(info.value) and "msmt17" in str(info.value)


def test_unknown_option_is_a_config_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_dataset("cuhk01", tmp_path, {"num_train_id": 10})
    assert "num_train_ids" in str(info.value)


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        parse_market1501(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- CUHK01 (real)


def test_cuhk01_real_split_is_485_486_across_two_cameras(cuhk01_dir):
    result = parse_cuhk01(cuhk01_dir)
    records = result.records
    assert len(records) == 3884 and not result.quarantined and not result.skipped
    assert len({r.pid for r in records}) == 971 and {r.camid for r in records} == {0, 1}
    train = {r.pid for r in records if r.split == "train"}
    query = {r.pid for r in records if r.split == "query"}
    gallery = {r.pid for r in records if r.split == "gallery"}
    assert len(train) == 485 and query == gallery and len(query) == 486
    assert not train & query
    assert {r.camid for r in records if r.split == "query"} == {0}
    assert {r.camid for r in records if r.split == "gallery"} == {1}
    assert (result.counts["train"], result.counts["query"], result.counts["gallery"]) == (
        1940, 972, 972,
    )
    assert result.counts["train_ids"] == 485 and result.counts["test_ids"] == 486
    # Camera from the image index: 001/002 -> camid 0, 003/004 -> camid 1.
    first = {r.path: r for r in records}["images/0001003.png"]
    assert (first.pid, first.camid, first.orig_camid, first.frame) == (1, 1, 2, 3)
    table = summary_table(records)
    assert "train   |   485 |     1940 |         2" in table
    assert "query   |   486 |      972 |         1" in table


# The seed-0 train ids (sha256 of "3,4,7,...") as this code first produced them.
PINNED_CUHK01_SEED0 = "f313ee147136"


def test_cuhk01_split_is_deterministic_and_seeded(cuhk01_dir):
    a, b = parse_cuhk01(cuhk01_dir), parse_cuhk01(cuhk01_dir)
    assert a.records == b.records
    train_ids = sorted({r.pid for r in a.records if r.split == "train"})
    # Pinned: the split for seed 0 must not change between versions of this code.
    digest = hashlib.sha256(",".join(map(str, train_ids)).encode()).hexdigest()[:12]
    assert train_ids[:6] == [3, 4, 7, 9, 10, 14] and digest == PINNED_CUHK01_SEED0
    other = parse_cuhk01(cuhk01_dir, CUHK01Options(split_seed=1))
    assert {r.pid for r in other.records if r.split == "train"} != set(train_ids)
    swapped = parse_cuhk01(cuhk01_dir, CUHK01Options(query_camera=1))
    assert {r.camid for r in swapped.records if r.split == "query"} == {1}



def test_cuhk01_numpy_split_reproduces_the_yardstick_csv(cuhk01_dir):
    # shared/data/cuhk01/splits/rng0.csv: every number that is compared uses this split
    with open(cuhk01_dir / "splits" / "rng0.csv", newline="") as f:
        expected = {(r["path"], r["split"]) for r in csv.DictReader(f)}
    result = parse_cuhk01(cuhk01_dir, CUHK01Options(split_method="numpy"))
    assert {(r.path, r.split) for r in result.records} == expected
    assert dict(result.records[0].extra)["split_method"] == "numpy"
    with pytest.raises(ConfigError, match="split_method is 'rng'.*numpy reproduces"):
        parse_cuhk01(cuhk01_dir, CUHK01Options(split_method="rng"))


def test_a_format_option_outside_its_choices_fails_when_the_options_are_made():
    # before any file is read, so `reidaug run --dry-run` catches it
    with pytest.raises(ConfigError, match="option split_method is 'rng'; expected one of sha256, numpy"):
        PARSERS["cuhk01"].make_options({"split_method": "rng"})
    with pytest.raises(ConfigError, match="option variant is 'detcted'; expected one of detected, labeled"):
        PARSERS["cuhk03-np"].make_options({"variant": "detcted"})


def test_cuhk01_every_real_image_decodes(cuhk01_dir):
    # All 3,884 crops decode in about 2 s on 2 cores, so the full set runs by default.
    shapes, modes = set(), set()
    for _record, outcome in decode_records(cuhk01_dir, parse_cuhk01(cuhk01_dir).records):
        assert isinstance(outcome, DecodedImage), outcome
        shapes.add(outcome.rgb.shape)
        modes.add(outcome.original_mode)
    assert shapes == {(160, 60, 3)} and modes == {"RGB"}


def test_folder_manifest_reads_cuhk01_manifest(cuhk01_dir):
    result = parse_folder(cuhk01_dir, parse_dataset_options("folder", manifest="manifest.csv"))
    assert len(result.records) == 3884 and {r.camid for r in result.records} == {0, 1}
    assert {r.split for r in result.records} == {"train"}
    # every file that is not an image is listed with its reason, never dropped; the folder also
    # holds the manifest itself and (since 2026-12) splits/rng0.csv
    skipped = {s.path for s in result.skipped}
    assert "NOTICE.md" in skipped and not any(p.endswith((".jpg", ".png")) for p in skipped)


def parse_dataset_options(name: str, **values):
    return get_parser(name).make_options(values)


# ----------------------------------------------------------------------------- Market (real)


MARKET_SOURCES = {
    "bounding_box_train": ["inputs_many_train", "demo/train"],
    "query": ["inputs_many_test/0"],
    "bounding_box_test": ["inputs_many_test/1", "inputs_many_test_market", "inputs_two"],
}


def _market_layout(samples: Path, root: Path) -> Path:
    """Symlink the real Market-style crops into Market's folder layout (first name wins)."""
    for target, sources in MARKET_SOURCES.items():
        (root / target).mkdir(parents=True)
        for source in sources:
            for path in sorted((samples / source).rglob("*.jpg")):
                link = root / target / path.name
                if not link.exists():
                    link.symlink_to(path)
    return root


def test_market_real_names_parse_and_odd_names_are_quarantined(market_samples_dir, tmp_path):
    root = _market_layout(market_samples_dir, tmp_path / "market")
    result = parse_market1501(root)
    _assert_nothing_lost(root, result)
    outcome = _by_path(result)
    for odd in (
        "query/l0155_c3s1_025176_00.jpg",
        "query/b1324_c1s6_007741_00.jpg",
        "query/back0100_c3s2_115894_00.jpg",
        "bounding_box_test/bb.jpg",
        "bounding_box_test/000.jpg",
    ):
        assert outcome[odd] == "unparseable-name", odd
    record = {r.path: r for r in result.records}["bounding_box_train/0002_c2s1_000351_01.jpg"]
    assert (record.pid, record.camid, record.orig_camid, record.frame, record.split) == (
        2, 1, 2, 351, "train",
    )
    assert dict(record.extra) == {"sequence": "1", "box": "01"}
    distractor = "bounding_box_test/0000_c3s1_107067_00.jpg"
    assert outcome[distractor] == "record"  # pid 0000: a distractor, kept and counted
    assert result.counts["distractors_kept"] == sum(r.pid == 0 for r in result.records) == 2
    assert {r.camid for r in result.records} <= set(range(6))
    assert len(result.records) > 50 and result.counts["quarantined.unparseable-name"] >= 10
    # The real crops all decode.
    checked = check_images(root, result)
    assert checked.records == result.records and checked.quarantined == result.quarantined


def test_duke_real_names_parse(market_samples_dir, tmp_path):
    root = tmp_path / "duke"
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True)
    for path in sorted((market_samples_dir / "inputs_many_test_duke").rglob("*.jpg")):
        link = root / "bounding_box_test" / path.name
        if not link.exists():
            link.symlink_to(path)
    result = parse_dukemtmc_reid(root)
    _assert_nothing_lost(root, result)
    outcome = _by_path(result)
    assert outcome["bounding_box_test/00000.jpg"] == "unparseable-name"
    rec = {r.path: r for r in result.records}["bounding_box_test/4141_c8_f0022224.jpg"]
    assert (rec.pid, rec.camid, rec.frame) == (4141, 7, 22224)
    assert len(result.records) == 20


def test_market_junk_cameras_and_non_images(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True)
    _jpeg(root / "bounding_box_test" / "-1_c1s1_000401_03.jpg")
    _jpeg(root / "bounding_box_test" / "0001_c7s1_000001_00.jpg")
    _jpeg(root / "bounding_box_test" / "0001_c1s1_000001_00.jpg")
    _jpeg(root / "query" / "ñandú" / "0001_c2s1_000001_00.jpg")  # nested, non-ASCII folder
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "bounding_box_test" / ".DS_Store").write_bytes(b"\0")
    (root / "query" / "readme.txt").write_text("hi")
    result = parse_market1501(tmp_path)  # enters the release folder
    outcome = _by_path(result)
    assert outcome == {
        "bounding_box_test/-1_c1s1_000401_03.jpg": "junk-id",
        "bounding_box_test/0001_c7s1_000001_00.jpg": "unknown-camera",
        "bounding_box_test/0001_c1s1_000001_00.jpg": "record",
        "query/ñandú/0001_c2s1_000001_00.jpg": "record",
        "bounding_box_test/Thumbs.db": "not-an-image-extension",
        "bounding_box_test/.DS_Store": "hidden-file",
        "query/readme.txt": "not-an-image-extension",
    }
    assert result.counts["junk_dropped"] == 1 and result.counts["skipped"] == 3
    assert [r.split for r in result.records] == ["query", "gallery"]  # sorted by split


def test_market_missing_subset_folder_says_what_exists(tmp_path):
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(DataError, match="query"):
        parse_market1501(tmp_path)
    assert parse_dataset("market1501", tmp_path, {"splits": ["train"]}).records == []


def test_output_order_is_sorted_not_file_system_order(tmp_path):
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / folder).mkdir()
    for name in ("0009_c1s1_000001_00.jpg", "0001_c1s1_000001_00.jpg", "0005_c1s1_000001_00.jpg"):
        _jpeg(tmp_path / "bounding_box_train" / name)
    paths = [r.path for r in parse_market1501(tmp_path).records]
    assert paths == sorted(paths) and len(paths) == 3


# ----------------------------------------------------------------------------- MSMT17


MSMT_TRAIN = ["0367_010_10_0303noon_0606_2.jpg", "0434_020_07_0303noon_1785_5_ex.jpg"]
MSMT_VAL = ["0494_029_01_0303afternoon_0435_2_ex.jpg"]
MSMT_TEST = ["0917_021_15_0113morning_0174_0.jpg", "2744_037_06_0114noon_0915_0_ex.jpg"]


def _msmt_layout(samples: Path, root: Path) -> Path:
    source = {p.name: p for p in (samples / "inputs_many_test_msmt").rglob("*.jpg")}
    lines: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    for names, folder, lists in (
        (MSMT_TRAIN, "train", ["train"]),
        (MSMT_VAL, "train", ["val"]),
        (MSMT_TEST[:1], "test", ["query"]),
        (MSMT_TEST[1:], "test", ["gallery"]),
    ):
        for name in names:
            rel = f"{name[:4]}/{name}"
            (root / folder / name[:4]).mkdir(parents=True, exist_ok=True)
            shutil.copy(source[name], root / folder / rel)
            lines[lists[0]].append(f"{rel} {int(name[:4])}")
    lines["gallery"].append("9999/9999_000_03_0303noon_0001_0.jpg 9999")  # listed, not on disk
    lines["gallery"].append("not a valid line")
    lines["train"].append(lines["train"][0])  # listed twice
    shutil.copy(source[MSMT_TEST[0]], root / "test" / "0917" / "0917_999_02_0113morning_0001_0.jpg")
    for split, content in lines.items():
        (root / f"list_{split}.txt").write_text("\n".join(content) + "\n")
    return root


def test_msmt17_lists_cameras_and_problems(market_samples_dir, tmp_path):
    root = _msmt_layout(market_samples_dir, tmp_path / "MSMT17_V1")
    result = parse_msmt17(tmp_path)  # enters MSMT17_V1
    by_path = {r.path: r for r in result.records}
    rec = by_path["test/0917/0917_021_15_0113morning_0174_0.jpg"]
    assert (rec.pid, rec.camid, rec.orig_camid, rec.split, rec.frame) == (917, 14, 15, "query", 174)
    assert dict(rec.extra) == {"daytime": "0113morning"}
    assert by_path["train/0434/0434_020_07_0303noon_1785_5_ex.jpg"].camid == 6
    assert by_path["train/0494/0494_029_01_0303afternoon_0435_2_ex.jpg"].split == "train"  # val
    assert result.counts["train"] == 3 and result.counts["gallery"] == 1
    outcome = _by_path(result)
    assert outcome["test/9999/9999_000_03_0303noon_0001_0.jpg"] == "missing-from-list"
    assert outcome["list_gallery.txt:3"] == "bad-manifest-row"
    assert outcome["list_train.txt:3"] == "duplicate-entry"
    assert outcome["test/0917/0917_999_02_0113morning_0001_0.jpg"] == "not-in-list"
    assert result.counts["quarantined.duplicate-entry"] == 1
    on_disk = {f"{p}" for p in _all_files(root) if p.endswith(".jpg")}
    assert on_disk <= set(_accounted(result))

    no_val = parse_msmt17(root, parse_dataset_options("msmt17", merge_val=False))
    assert no_val.counts["train"] == 2 and no_val.counts["skipped.val-not-merged"] == 1


# ----------------------------------------------------------------------------- CUHK03-NP


def test_cuhk03_np_variant_and_two_cameras(tmp_path):
    for variant, n in (("detected", 2), ("labeled", 1)):
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            (tmp_path / variant / folder).mkdir(parents=True)
        for i in range(n):
            _jpeg(tmp_path / variant / "bounding_box_train" / f"0001_c1_{i + 1}.png")
    _jpeg(tmp_path / "detected" / "query" / "0002_c2_1.png")
    _jpeg(tmp_path / "detected" / "query" / "0002_c3_1.png")
    result = parse_cuhk03_np(tmp_path)
    assert [r.path for r in result.records] == [
        "detected/bounding_box_train/0001_c1_1.png",
        "detected/bounding_box_train/0001_c1_2.png",
        "detected/query/0002_c2_1.png",
    ]
    assert result.records[2].camid == 1 and result.records[1].frame == 2
    assert _by_path(result)["detected/query/0002_c3_1.png"] == "unknown-camera"
    labeled = parse_dataset("cuhk03-np", tmp_path, {"variant": "labeled"})
    assert [r.path for r in labeled.records] == ["labeled/bounding_box_train/0001_c1_1.png"]
    assert check_images(tmp_path, result).counts["records"] == 3  # paths resolve from the root


# ----------------------------------------------------------------------------- bad-input corpus


def test_bad_input_corpus_every_file_has_its_documented_outcome(tmp_path):
    root = tmp_path / "corpus"
    expected = _bad_corpus(root)
    options = parse_dataset_options(
        "folder", camera_regex=r"_c(?P<cam>\d)s", folder_ids="sorted"
    )
    parsed = parse_folder(root, options)
    _assert_nothing_lost(root, parsed)
    checked = check_images(root, parsed)
    _assert_nothing_lost(root, checked)

    outcome = _by_path(checked)
    decoded = dict(
        (record.path, result)
        for record, result in decode_records(root, checked.records)
    )
    for rel, want in expected.items():
        if want in QUARANTINE_REASONS or want in SKIP_REASONS:
            assert outcome[rel] == want, rel
        else:  # "record" or a conversion name: it decodes, with that conversion named
            assert outcome[rel] == "record", rel
            image = decoded[rel]
            assert image.rgb.ndim == 3 and image.rgb.shape[2] == 3 and image.rgb.dtype == np.uint8
            if want != "record":
                assert want in image.conversions, (rel, image.conversions)
            else:
                assert image.conversions == ()
    # Cameras and ids: folders numbered in sorted order, ñandú last; camera from the name.
    rec = {r.path: r for r in checked.records}
    assert rec["ñandú/0001_c1s1_000001_00.jpg"].pid == 4
    assert dict(rec["ñandú/0001_c1s1_000001_00.jpg"].extra) == {"folder": "ñandú"}
    assert rec["0002/0002_c3s1_000004_00.png"].camid == 2
    assert checked.counts["conversion.rgba->rgb"] == 1
    assert checked.counts["records"] + checked.counts["quarantined"] + checked.counts[
        "skipped"
    ] == len(expected)


def test_folder_integer_ids_quarantine_a_non_integer_folder(tmp_path):
    _jpeg(tmp_path / "0007" / "a_c2.jpg")
    _jpeg(tmp_path / "-1" / "a_c1.jpg")
    _jpeg(tmp_path / "ñandú" / "a_c1.jpg")
    result = parse_dataset("folder", tmp_path, {"camera_regex": r"_c(?P<cam>\d)"})
    assert [(r.path, r.pid, r.camid) for r in result.records] == [("0007/a_c2.jpg", 7, 1)]
    outcome = _by_path(result)
    assert outcome["-1/a_c1.jpg"] == "junk-id"
    assert outcome["ñandú/a_c1.jpg"] == "unparseable-name"


def test_folder_camera_regex_needs_a_cam_group(tmp_path):
    with pytest.raises(ConfigError, match="named group 'cam'"):
        parse_dataset("folder", tmp_path, {"camera_regex": r"_c(\d)"})


def test_folder_manifest_splits_missing_files_and_bad_rows(tmp_path):
    _jpeg(tmp_path / "a" / "1.jpg")
    _jpeg(tmp_path / "a" / "2.jpg")
    _jpeg(tmp_path / "a" / "unlisted.jpg")
    (tmp_path / "m.csv").write_text(
        "path,pid,camid,split\n"
        "a/1.jpg,5,1,train\n"
        "a/2.jpg,6,2,query\n"
        "a/gone.jpg,7,1,gallery\n"
        "a/1.jpg,5,1,train\n"
        "a/2.jpg,six,1,train\n"
        "a/2.jpg,6,1,testing\n"
    )
    result = parse_dataset("folder", tmp_path, {"manifest": "m.csv"})
    assert [(r.path, r.pid, r.camid, r.split) for r in result.records] == [
        ("a/1.jpg", 5, 0, "train"),
        ("a/2.jpg", 6, 1, "query"),
    ]
    assert result.counts["quarantined.missing-from-list"] == 1
    assert result.counts["quarantined.duplicate-entry"] == 1
    assert result.counts["quarantined.bad-manifest-row"] == 2
    outcome = _by_path(result)
    assert outcome["a/unlisted.jpg"] == "not-in-manifest"
    assert outcome["m.csv:5"] == "duplicate-entry" and outcome["m.csv:6"] == "bad-manifest-row"
    files = [p for p in _accounted(result) if not p.startswith("m.csv:")]
    assert sorted(files) == ["a/1.jpg", "a/2.jpg", "a/gone.jpg", "a/unlisted.jpg"]


def test_record_rejects_an_unknown_split():
    with pytest.raises(ValueError):
        Record("a.jpg", 1, 0, "val", 1)
    assert SPLITS == ("train", "query", "gallery")


def test_symlinked_folders_are_followed_once(tmp_path):
    _jpeg(tmp_path / "elsewhere" / "0003_c1s1_000001_00.jpg")
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / "m" / folder).mkdir(parents=True)
    (tmp_path / "m" / "bounding_box_train" / "more").symlink_to(tmp_path / "elsewhere")
    train = tmp_path / "m" / "bounding_box_train"
    (train / "loop").symlink_to(train)  # a link loop must not hang or duplicate
    result = parse_market1501(tmp_path / "m")
    assert [r.path for r in result.records] == ["bounding_box_train/more/0003_c1s1_000001_00.jpg"]
