"""bench/generate.py (CamStyle, PG2, Deformable GAN) runs end to end on tiny settings and writes its JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_generate_runs_every_arm_and_writes_the_json(tmp_path):
    out = tmp_path / "generate.json"
    cmd = [sys.executable, str(ROOT / "bench" / "generate.py"), "--data", "synthetic", "--images", "4",
           "--ngf", "4", "--n-blocks", "1", "--height", "32", "--width", "16", "--quick", "--no-gpu",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    run = json.loads(out.read_text())["runs"]["ngf4-b1-32x16"]
    assert run["machine"]["cpu_count"] >= 1
    assert len(run["machine"]["load_average_before"]) == 3 and len(run["machine"]["load_average_after"]) == 3
    assert run["generator"]["flops_per_image"]["flops"] > 0
    assert run["gpu"].startswith("skipped")
    cpu = run["sections"]["cpu"]
    assert cpu["ceiling"]["gflops_used"] > 0
    arms = {(a["arm"], a["batch_size"]): a for a in cpu["arms"]}
    assert set(arms) == {("A", 1), ("B", 1), ("B", 2), ("C", 1), ("C", 2)}
    for a in arms.values():
        assert a["images"] == 4 and a["images_per_s_median"] > 0 and a["percent_of_ceiling"] > 0
    for bs in (1, 2):
        b = arms[("B", bs)]
        assert b["overlap_efficiency_stage_median"] > 0 and b["overlap_efficiency_loop_median"] > 0
        assert b["fakes_vs_first_batch_size"]["images"] == 4
    assert cpu["stage_key_same_for_all_batch_sizes"] is True
    assert set(cpu["breakdown"]["ms_per_image"]) == {"read_decode_resize", "to_tensor_h2d", "model", "d2h",
                                                     "png_encode", "hdf5_write"}
    assert {v["variant"] for v in cpu["variants"]} >= {"fp32 (the stage's CPU path)", "bf16 autocast"}


@pytest.mark.parametrize("model, size", [("pg2", ("16", "8")), ("deformable", ("32", "16"))])
def test_bench_generate_pose_guided_runs_every_arm_and_keeps_other_runs(tmp_path, model, size):
    out = tmp_path / "generate.json"
    out.write_text(json.dumps({"benchmark": "generate", "runs": {"earlier": {"kept": True}}}))
    cmd = [sys.executable, str(ROOT / "bench" / "generate.py"), "--generator", model, "--data", "synthetic",
           "--images", "4", "--ngf", "4", "--height", size[0], "--width", size[1], "--quick", "--no-gpu",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    runs = json.loads(out.read_text())["runs"]
    assert runs["earlier"] == {"kept": True}
    run = runs[f"{model}-ngf4-{size[0]}x{size[1]}"]
    assert run["generator"]["model"] == model and run["generator"]["flops_per_image"]["flops"] > 0
    assert "openpose-csv" in run["poses"] and run["gpu"].startswith("skipped")
    cpu = run["sections"]["cpu"]
    assert cpu["fakes"] == 4 * 2 - 2  # each image in the 2 target poses but its own
    arms = {(a["arm"], a["batch_size"]): a for a in cpu["arms"]}
    assert set(arms) == {("A", 1), ("B", 1), ("B", 2), ("C", 1), ("C", 2)}
    for a in arms.values():
        assert a["images"] == 6 and a["images_per_s_median"] > 0 and a["cpu_seconds_per_image_median"] > 0
        assert a["percent_of_ceiling"] > 0
    for bs in (1, 2):
        b = arms[("B", bs)]
        assert b["overlap_efficiency_stage_median"] > 0
        assert b["fakes_vs_first_batch_size"]["images"] == 6
    assert cpu["stage_key_same_for_all_batch_sizes"] is True
    # every arm makes the stage's (condition, target) pairs: on the CPU its PNGs are C's outputs exactly
    assert cpu["stage_fakes_vs_model_only"] == {str(bs): {"same_count": True, "identical_images": 6, "images": 6,
                                                           "max_abs_diff": 0} for bs in (1, 2)}
