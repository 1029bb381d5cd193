"""The ingest stage end to end: real CUHK01, the bad-input corpus, strictness, fingerprint keys."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from corpus import bad_corpus
from reidaug.data.images import decode_image, decode_stored
from reidaug.errors import ConfigError, DataError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES


def pipeline(tmp_path: Path, root: Path, fmt: str, extra: str = "", options: str = "{}"):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(f"""\
        name: t
        stages:
          ingest:
            params:
              format: {fmt}
              root: {root}
              options: {options}
              chunk_size: 500
        """) + extra)
    return build_graph(load_pipeline(p), STAGES)


def chunks(entry: Path):
    return [read_h5_chunk(p) for p in sorted((entry / "chunks").glob("*.h5"))]


def test_ingest_all_of_cuhk01(tmp_path, cuhk01_dir):
    graph = pipeline(tmp_path, cuhk01_dir, "cuhk01")
    report = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=2))
    entry = report.results[0].entry
    meta = json.loads((entry / "meta.json").read_text())
    s = meta["summary"]
    assert s["images"] == 3884 and s["quarantined"] == {}
    assert s["splits"]["train"] == {"ids": 485, "images": 1940, "cameras": 2}
    assert s["splits"]["query"]["ids"] == 486 and s["splits"]["gallery"]["ids"] == 486
    assert meta["num_chunks"] == 8
    # stored bytes decode to exactly the pixels of the file
    arrays, _ = chunks(entry)[3]
    i = 17
    original = decode_image(cuhk01_dir / arrays["path"][i]).rgb
    assert np.array_equal(decode_stored(arrays["image"][i]), original)
    assert {int(arrays["pid"][i])} == {int(Path(arrays["path"][i]).stem[:4])}


def test_the_key_is_the_bytes_not_the_mtimes(tmp_path):
    """A re-synced or copied dataset (new mtimes, same bytes) keeps its key; one changed byte does not."""
    root = tmp_path / "data"
    bad_corpus(root)
    k1 = pipeline(tmp_path, root, "folder").keys["ingest"]
    f = root / "0001" / "0001_c1s1_000001_00.jpg"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert pipeline(tmp_path, root, "folder").keys["ingest"] == k1  # touched: same bytes, same key
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)  # new mtimes, inodes and root: the same dataset
    assert pipeline(tmp_path, copy, "folder").keys["ingest"] == k1
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime as before: the stat cache must not be fooled
    assert pipeline(tmp_path, root, "folder").keys["ingest"] != k1


def test_a_second_plan_reads_only_changed_files(tmp_path, monkeypatch):
    from reidaug.io import hashcache

    root = tmp_path / "data"
    bad_corpus(root)
    read: list[str] = []
    real = hashcache.file_sha256
    monkeypatch.setattr(hashcache, "file_sha256", lambda p: read.append(str(p)) or real(p))
    k1 = pipeline(tmp_path, root, "folder").keys["ingest"]
    first = len(read)
    assert first > 10
    read.clear()
    assert pipeline(tmp_path, root, "folder").keys["ingest"] == k1
    assert read == []  # every digest came from the stat cache
    (root / "0001" / "0001_c1s1_000001_00.jpg").touch()
    pipeline(tmp_path, root, "folder")
    assert [Path(p).name for p in read] == ["0001_c1s1_000001_00.jpg"]


def test_content_hash_false_is_refused_with_the_fix(tmp_path):
    root = tmp_path / "data"
    bad_corpus(root)
    p = tmp_path / "p.yaml"
    p.write_text(f"name: t\nstages:\n  ingest:\n    params: {{format: folder, root: {root}, content_hash: false}}\n")
    with pytest.raises(ConfigError, match=r"(?s)content_hash.*always the files' bytes.*Delete content_hash"):
        build_graph(load_pipeline(p), STAGES)


def test_a_manifest_outside_the_root_is_part_of_the_key(tmp_path):
    root = tmp_path / "data"
    bad_corpus(root)
    manifest = tmp_path / "elsewhere" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,pid,camid\n0001/0001_c1s1_000001_00.jpg,1,0\n")
    opts = f"{{manifest: {manifest}}}"
    k1 = pipeline(tmp_path, root, "folder", options=opts).keys["ingest"]
    manifest.write_text("path,pid,camid\n0001/0001_c1s1_000001_00.jpg,1,1\n")  # same size, new camera
    assert pipeline(tmp_path, root, "folder", options=opts).keys["ingest"] != k1


def test_bad_corpus_is_quarantined_with_reasons_and_nothing_is_lost(tmp_path):
    root = tmp_path / "data"
    expected = bad_corpus(root)
    opts = "{camera_regex: '_c(?P<cam>\\d)s', folder_ids: sorted}"
    graph = pipeline(tmp_path, root, "folder", options=opts)
    entry = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=1)).results[0].entry
    q = json.loads((entry / "quarantine.json").read_text())
    got = {item["path"]: item["reason"] for item in q["quarantined"] + q["skipped"]}
    kept = {p for arrays, _ in chunks(entry) for p in arrays["path"]}
    for rel, want in expected.items():
        if rel in kept:
            assert want not in got.values() or rel not in got, rel
            assert want in ("record", "rgba->rgb", "16bit->8bit", "grayscale->rgb", "palette->rgb"), rel
        else:
            assert got.get(rel) == want, rel
    assert len(kept) + len(got) == len(expected)  # every file is a record or a reported entry
    summary = json.loads((entry / "meta.json").read_text())["summary"]
    assert summary["conversions"]["rgba->rgb"] == 1 and summary["conversions"]["16bit->8bit"] == 1
    assert any("truncated" in line for line in summary["report"])


def test_strict_fails_naming_the_first_bad_file(tmp_path):
    root = tmp_path / "data"
    bad_corpus(root)
    graph = pipeline(tmp_path, root, "folder", options="{camera_regex: '_c(?P<cam>\\d)s', folder_ids: sorted}")
    graph.nodes["ingest"].params = graph.nodes["ingest"].params.model_copy(update={"strict": True})
    with pytest.raises(DataError, match=r"params.strict is on.*unparseable-name"):
        run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=1))


def test_unknown_format_and_option_point_at_the_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"p.yaml:5:.*format.*Did you mean \"market1501\""):
        pipeline(tmp_path, tmp_path, "market1502")
    with pytest.raises(ConfigError, match=r"num_train_idz.*Did you mean \"num_train_ids\""):
        pipeline(tmp_path, tmp_path, "cuhk01", options="{num_train_idz: 3}")


def test_missing_root_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="dataset root not found.*nowhere"):
        pipeline(tmp_path, tmp_path / "nowhere", "market1501")


def _folder_dataset(tmp_path, rows):
    import cv2
    import numpy as np

    root = tmp_path / "ds"
    lines = ["path,pid,camid,split"]
    for i, (pid, cam, split) in enumerate(rows):
        rel = f"img/{pid:04d}_{i:02d}.png"
        (root / "img").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.full((32, 16, 3), 40 + 10 * i, np.uint8))
        lines.append(f"{rel},{pid},{cam},{split}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root


def test_an_empty_gallery_is_an_error_not_a_quiet_completed(tmp_path):
    # 0-based cameras with the default camera_base 1: every camera-0 row was quarantined and the
    # run printed "Completed" with an empty query (issue 14)
    from reidaug.data.datasets import check_splits, get_parser
    from reidaug.errors import DataError

    root = _folder_dataset(tmp_path, [(1, 0, "train"), (1, 1, "train"), (2, 0, "query"), (2, 1, "gallery")])
    parser = get_parser("folder")
    result = parser(root, {"manifest": "m.csv"})
    with pytest.raises(DataError, match=r"train 1, query 0, gallery 1 images.*unknown-camera 2.*camera_base: 0"):
        check_splits(result, "folder", parser.make_options({"manifest": "m.csv"}))
    fixed = parser(root, {"manifest": "m.csv", "camera_base": 0})
    assert check_splits(fixed, "folder", parser.make_options({"manifest": "m.csv", "camera_base": 0})) is None


def test_identities_shared_by_train_and_test_are_an_error_unless_declared(tmp_path):
    from reidaug.data.datasets import check_splits, get_parser
    from reidaug.errors import DataError

    root = _folder_dataset(tmp_path, [(1, 1, "train"), (2, 1, "train"), (2, 1, "query"), (2, 2, "gallery")])
    parser = get_parser("folder")
    opts = {"manifest": "m.csv"}
    with pytest.raises(DataError, match=r"1 identities are in train and in query/gallery \(e.g. \[2\]\)"):
        check_splits(parser(root, opts), "folder", parser.make_options(opts))
    shared = {**opts, "shared_ids": True}
    assert check_splits(parser(root, shared), "folder", parser.make_options(shared)) is None
    train_only = _folder_dataset(tmp_path / "t", [(1, 1, "train"), (2, 2, "train")])
    assert "train-only" in check_splits(parser(train_only, opts), "folder", parser.make_options(opts))


def test_a_tiny_image_is_named_in_a_warning_and_min_size_quarantines_it(tmp_path):
    from corpus import jpeg

    root = tmp_path / "data"
    for pid, cam in ((1, 1), (1, 2), (2, 1), (2, 2)):
        jpeg(root / f"{pid:04d}" / f"{pid:04d}_c{cam}s1_000001_00.jpg", shape=(32, 16, 3))
    jpeg(root / "0002" / "0002_c1s1_000002_00.jpg", shape=(1, 1, 3))
    opts = "{camera_regex: '_c(?P<cam>\\d)s', folder_ids: sorted, shared_ids: true}"
    graph = pipeline(tmp_path, root, "folder", options=opts)
    entry = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=1)).results[0].entry
    summary = json.loads((entry / "meta.json").read_text())["summary"]
    assert summary["images"] == 5 and summary["tiny_images"] == 1
    assert any("0002/0002_c1s1_000002_00.jpg (1 x 1)" in line and "min_size: [16, 8]" in line
               for line in summary["report"])
    strict = pipeline(tmp_path, root, "folder", options=opts, extra="      min_size: [16, 8]\n")
    assert strict.keys["ingest"] != graph.keys["ingest"]  # set, it is in the key (unset, it is not)
    entry = run_pipeline(strict, tmp_path / "ws", options=RunOptions(workers=1)).results[0].entry
    q = json.loads((entry / "quarantine.json").read_text())
    assert q["counts"] == {"too-small": 1} and "1 x 1 px is below min_size 16 x 8" in q["quarantined"][0]["detail"]


def test_a_folder_named_like_an_image_changes_the_key_and_is_quarantined(tmp_path):
    from corpus import jpeg

    root = tmp_path / "data"
    for pid, cam in ((1, 1), (1, 2), (2, 1), (2, 2)):
        jpeg(root / f"{pid:04d}" / f"{pid:04d}_c{cam}s1_000001_00.jpg")
    opts = "{camera_regex: '_c(?P<cam>\\d)s', folder_ids: sorted, shared_ids: true}"
    before = pipeline(tmp_path, root, "folder", options=opts).keys["ingest"]
    (root / "0001" / "0001_c1s1_000009_00.jpg").mkdir()
    graph = pipeline(tmp_path, root, "folder", options=opts)
    assert graph.keys["ingest"] != before
    entry = run_pipeline(graph, tmp_path / "ws", options=RunOptions(workers=1)).results[0].entry
    q = json.loads((entry / "quarantine.json").read_text())
    assert q["counts"] == {"not-a-file": 1} and q["quarantined"][0]["path"] == "0001/0001_c1s1_000009_00.jpg"


def test_a_chunk_reads_only_its_own_records(tmp_path):
    """plan() writes one records file per chunk; a chunk never loads the whole dataset's records (at 100k
    images that made ingest superlinear and held the list twice per worker: BENCHMARKS.md, "Scale")."""
    from reidaug.pipeline.context import StageContext
    from stages import ingest

    root = tmp_path / "data"
    bad_corpus(root)
    spec = STAGES["ingest"]
    work = tmp_path / "entry"
    work.mkdir()
    ctx = StageContext(stage="ingest", spec_name="ingest", key="0" * 64,
                       params=spec.params(format="folder", root=str(root), chunk_size=2), inputs={},
                       work_dir=work, base_dir=tmp_path)
    n = ingest.plan(ctx)
    assert n >= 3
    header = json.loads((work / ingest.RECORDS).read_text())
    assert "records" not in header and header["num_records"] > 2 * (n - 1)
    per_chunk = [json.loads((work / ingest.RECORDS_DIR / f"{i:05d}.json").read_text()) for i in range(n)]
    assert [len(r) for r in per_chunk[:-1]] == [2] * (n - 1) and sum(map(len, per_chunk)) == header["num_records"]
    (work / ingest.RECORDS_DIR / f"{1:05d}.json").unlink()  # chunk 0 must not need chunk 1's rows
    ctx = dataclasses.replace(ctx, num_chunks=n)
    ingest.run_chunk(ctx, 0)
    assert ctx.chunk_path(0).is_file()
    with pytest.raises(FileNotFoundError):
        ingest.run_chunk(ctx, 1)
