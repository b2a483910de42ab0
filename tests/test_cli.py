"""The `bodymap` console script: help, params check exit codes and messages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bodymap.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands():
    from bodymap.cli import COMMANDS
    from bodymap.config import STAGES

    result = run_cli("--help")
    assert result.returncode == 0
    listed = set(re.findall(r"^ {4}(\w+)", result.stdout, flags=re.MULTILINE))
    assert set(STAGES) | {"params", "predict"} <= listed <= set(COMMANDS)


def test_params_check_accepts_defaults():
    result = run_cli("params", "check", str(ROOT / "params.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_params_check_rejects_unknown_key_and_wrong_type(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"render": {"image_sise": 64}}))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"render": {"image_size": "big"}}))
    for path, key in ((unknown, "render.image_sise"), (wrong, "render.image_size")):
        result = run_cli("params", "check", str(path))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert key in lines[0] and str(path) in lines[0]
        assert "Traceback" not in result.stderr


def test_params_defaults_match_committed_file():
    result = run_cli("params", "defaults")
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout).keys() == yaml.safe_load((ROOT / "params.yaml").read_text()).keys()


def test_training_commands_resume_by_default_and_take_restart():
    from bodymap.cli import build_parser

    for command, paths in (
        ("cse_init", ["--template", "t", "--render", "r", "--model-dir", "m", "--out", "o"]),
        ("pretrain", ["--template", "t", "--render", "r", "--cse", "c", "--model-dir", "m", "--out", "o"]),
        ("finetune", ["--template", "t", "--render", "r", "--cse", "c", "--pseudo-gt", "g", "--pretrained", "p",
                      "--model-dir", "m", "--out", "o"]),
    ):  # fmt: skip
        parser = build_parser([command])
        assert parser.parse_args([command, *paths]).restart is False, command
        assert parser.parse_args([command, *paths, "--restart"]).restart is True, command
