"""Quiet by default: what native libraries write to fd 2 goes to the run log, Python's own lines stay."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(tmp_path, enabled: bool) -> tuple[str, str]:
    code = textwrap.dedent(f"""
        import logging, os, sys
        from pathlib import Path
        from reidaug.cli import _native_stderr_to, _setup_logging
        _setup_logging(0)
        with _native_stderr_to(Path({str(tmp_path / 'run.log')!r}), {enabled}):
            os.write(2, b"W0000 native line from a C library\\n")
            logging.getLogger("reidaug").info("python log line")
            print("python stderr line", file=sys.stderr)
        os.write(2, b"after the run\\n")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    log = (tmp_path / "run.log").read_text() if (tmp_path / "run.log").exists() else ""
    return out.stderr, log


def test_native_lines_go_to_the_run_log_and_python_lines_to_the_terminal(tmp_path):
    terminal, log = _run(tmp_path, True)
    assert "W0000" not in terminal and "W0000 native line from a C library" in log
    assert "python log line" in terminal and "python stderr line" in terminal
    assert "after the run" in terminal  # fd 2 is given back


def test_verbose_shows_native_lines(tmp_path):
    terminal, log = _run(tmp_path, False)
    assert "W0000 native line" in terminal and log == ""


def test_fd2_and_handlers_come_back_when_the_run_fails(tmp_path):
    code = textwrap.dedent(f"""
        import logging, os, sys
        from pathlib import Path
        from reidaug.cli import _native_stderr_to, _setup_logging
        _setup_logging(0)
        late = logging.getLogger("late")
        try:
            with _native_stderr_to(Path({str(tmp_path / 'run.log')!r}), True):
                late.addHandler(logging.StreamHandler(sys.stderr))  # made during the run (dask does this)
                raise RuntimeError("stage failed")
        except RuntimeError:
            pass
        os.write(2, b"native after a failure\\n")
        late.warning("late handler still writes")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "native after a failure" in out.stderr and "late handler still writes" in out.stderr
    assert "Logging error" not in out.stderr


def test_third_party_info_stays_out_of_the_terminal_unless_verbose(tmp_path):
    code = textwrap.dedent("""
        import logging, sys
        from reidaug.cli import _setup_logging
        _setup_logging(int(sys.argv[1]))
        logging.getLogger("reidaug.pipeline.runner").info("own info")
        logging.getLogger("mmengine").info("third-party info")
        logging.getLogger("mmengine").warning("third-party warning")
    """)
    quiet = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True).stderr
    assert "own info" in quiet and "third-party warning" in quiet and "third-party info" not in quiet
    loud = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True).stderr
    assert "third-party info" in loud
