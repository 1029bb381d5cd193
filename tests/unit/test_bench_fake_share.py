"""bench/fake_share_plot.py: which arms become which points, and the PNG it writes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from fake_share_plot import points  # noqa: E402


def _arm(sampler: str, sets: list[str], made_by: dict[str, str], m: float, n_fake: int = 0, epochs: int = 12,
         seeds: int = 1) -> dict:
    return {"n": seeds, "steps": [300], "mAP": {"mean": m, "std": 0.01}, "rank1": {"mean": m - 0.05, "std": 0.01},
            "data": {"sets": sets, "made_by": made_by},
            "params": {"sampler": sampler, "train_batch_size": 64, "fake_per_batch": n_fake, "epochs": epochs}}


RECORD = {"pipeline_name": "t", "arms": {
    "real": _arm("random", ["real"], {}, 0.48),
    "real-e24": _arm("random", ["real"], {}, 0.50, epochs=24),
    "real-pk": _arm("pk", ["real"], {}, 0.17),
    "gan-8": _arm("realfake", ["real", "camstyle"], {"camstyle": "generate-camstyle-id"}, 0.51, 8),
    "gan-32": _arm("realfake", ["real", "camstyle"], {"camstyle": "generate-camstyle-id"}, 0.52, 32),
    "ct-16": _arm("realfake", ["real", "camstyle"], {"camstyle": "generate-colortransfer"}, 0.485, 16),
    "not-run": {**_arm("realfake", ["real", "camstyle"], {"camstyle": "generate-colortransfer"}, 0.0, 32), "n": 0},
}}


def test_each_kind_of_fakes_is_a_line_from_the_real_only_arm_at_zero() -> None:
    lines = points(RECORD, epochs=12)
    assert {k: [(x, name) for x, _, name in v] for k, v in lines.items()} == {
        "generate-camstyle-id": [(0.0, "real"), (0.125, "gan-8"), (0.5, "gan-32")],
        "generate-colortransfer": [(0.0, "real"), (0.25, "ct-16")],
    }  # another budget, P x K batches and arms without results are not points
    only = points(RECORD, epochs=None, arms=["real-e24", "gan-32"])
    assert [name for _, _, name in only["generate-camstyle-id"]] == ["real-e24", "gan-32"]


def test_it_writes_the_plot(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps(RECORD))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fake_share_plot.py"), str(tmp_path / "r.json"),
                           "--out", str(tmp_path / "p.png"), "--epochs", "12", "--reference", "real-e24"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = subprocess.run([sys.executable, str(ROOT / "bench" / "fake_share_plot.py"), str(tmp_path / "r.json"),
                            "--out", str(tmp_path / "q.png"), "--epochs", "7"], capture_output=True, text=True)
    assert empty.returncode == 1 and "no realfake arm" in empty.stderr
