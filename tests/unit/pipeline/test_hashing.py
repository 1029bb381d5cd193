from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from reidaug.errors import HashError
from reidaug.pipeline.hashing import FileRef, canonical_json, seed_for, stable_hash

def test_canonical_json_sorts_keys_and_marks_floats():
    assert canonical_json({"b": 1, "a": 2.5}) == '{"a":{"__float__":"2.5"},"b":1}'
    # 1 and 1.0 are different parameter values and must give different keys
    assert stable_hash({"x": 1}) != stable_hash({"x": 1.0})
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_golden_keys_are_pinned():
    # Pinned literal values: if one changes, every user's cache is invalidated. Change them
    # only together with a deliberate, documented change of the key recipe.
    assert stable_hash({"a": 1, "b": [1, 2, "x"]}) == "26ebbb0bc8b4eaa4a98e72d38770feb64f76fe84fbfe9531580eb4da83d44e79"


@pytest.mark.parametrize(
    "value",
    [object(), {1: "int key"}, {"s": {1, 2}}, float("nan"), math.inf, b"bytes"],
)
def test_unhashable_values_raise_instead_of_random_token(value):
    with pytest.raises(HashError):
        stable_hash({"param": value})


def test_same_key_in_a_fresh_interpreter():
    value = {"stage": "x", "params": {"eps": 0.1, "names": ["a", "b"], "n": 3, "flag": True, "none": None}}
    code = (
        "from reidaug.pipeline.hashing import stable_hash;"
        f"print(stable_hash({value!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == stable_hash(value)


def test_file_param_is_hashed_by_content_not_path(tmp_path: Path):
    a = tmp_path / "a" / "model.pth"
    b = tmp_path / "b" / "renamed.pth"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_bytes(b"weights" * 1000)
    b.write_bytes(b"weights" * 1000)
    assert stable_hash(FileRef(a)) == stable_hash(FileRef(b))
    b.write_bytes(b"weights" * 999 + b"weightX")
    assert stable_hash(FileRef(a)) != stable_hash(FileRef(b))


def test_missing_file_param_says_which_file(tmp_path: Path):
    with pytest.raises(HashError, match="missing.pth"):
        stable_hash({"checkpoint": FileRef(tmp_path / "missing.pth")})


def test_seed_depends_on_key_and_chunk_only():
    assert seed_for("k" * 64, 3) == seed_for("k" * 64, 3)
    assert seed_for("k" * 64, 3) != seed_for("k" * 64, 4)
    assert 0 <= seed_for("a", 0) < 2**63


def test_a_streamed_hash_equals_the_hash_of_the_whole_value():
    """A dataset fingerprint is hashed while its folder is walked: same digest as hashing it whole, so the
    keys made before (and every cache under them) stay."""
    from reidaug.pipeline.hashing import Digest, stable_hash_streamed

    head = {"format": "market1501", "options": {"split_seed": 0, "ratio": 0.5, "names": ["é", "b"]},
            "manifest_sha256": None}
    rows = [["0001/a.jpg", 10, "ab" * 32], ["dir.jpg/", "dir", 0], ["ü/x.png", -1, 0], ["z", 3, "unreadable: x"]]
    got = stable_hash_streamed(head, "files", iter(rows))
    assert isinstance(got, Digest)
    assert got == stable_hash({**head, "files": rows})
    assert stable_hash_streamed({}, "files", iter([])) == stable_hash({"files": []})
    assert stable_hash_streamed(head, "files", iter(rows[:-1])) != got
    with pytest.raises(HashError, match="both the streamed list and a head key"):
        stable_hash_streamed({"files": 1}, "files", iter([]))
    with pytest.raises(HashError, match=r"files\[0\]"):
        stable_hash_streamed({}, "files", iter([[float("nan")]]))
