"""What lands in site-packages: only the `reidaug` namespace, never a generic `pipeline` or `models`."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("reidaug-*.whl")
    return whl


def test_wheel_installs_only_the_reidaug_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"reidaug"}
    for sub in ("pipeline/runner.py", "stages/ingest.py", "models/__init__.py", "configs/demo.yaml",
                "data/datasets.py", "cli.py", "report/templates/report.html.j2"):
        assert f"reidaug/{sub}" in names, sub
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "reidaug = reidaug.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_stage_registry_import_is_light():
    # planning a cached pipeline imports every stage module: torch must not come with them
    code = "import sys, reidaug.stages, reidaug.cli; print('torch' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
