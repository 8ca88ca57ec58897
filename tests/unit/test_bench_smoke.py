"""A smoke run of the benchmark suite keeps it from rotting (speed is never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_run_measures_dockkit(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--systems", "dockkit,pool", "--strict",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "benchmarks.md").is_file()
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert "dockkit" in json.dumps(data)
