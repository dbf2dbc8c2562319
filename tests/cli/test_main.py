"""The console script's entry point."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from sparseseg.cli import main as cli_main


def test_console_script_is_run() -> None:
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts == {"sparseseg": "sparseseg.cli.main:run"}


def test_run_exits_with_the_command_code_and_freezes_the_heap(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["sparseseg", "oneseg", "propagate", "-i", "/no/such.nii.gz",
                                      "-a", "/no/ann.nii.gz", "-o", "/tmp/never.nii.gz"])
    threshold = gc.get_threshold()
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli_main.run()
        assert exit_info.value.code == 2
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (50_000, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "sparseseg", "--version"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("sparseseg ")
