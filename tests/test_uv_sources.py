"""scripts/uv_sources.py: `make` installs with uv from the sources pip is configured with."""

import os
import subprocess
import sys

from conftest import ROOT, load_script

uv_sources = load_script("scripts/uv_sources.py")


def test_flags_follow_pip_precedence_and_split_lists(tmp_path):
    config_file = tmp_path / "pip.conf"
    config_file.write_text(
        "[global]\nextra-index-url = file:///a/simple file:///b/simple\nfind-links = /global/wheels\n"
        "[install]\nconstraint = /caps.txt\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(config_file), PIP_FIND_LINKS="/env/wheels")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "uv_sources.py")], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    pairs = list(zip(out[::2], out[1::2], strict=False))
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert ("--extra-index-url", "file:///a/simple") in pairs and ("--extra-index-url", "file:///b/simple") in pairs
    assert ("--find-links", "/env/wheels") in pairs  # the variable wins over the file
    assert ("--find-links", "/global/wheels") not in pairs
    assert ("--constraint", "/caps.txt") in pairs


def test_no_configuration_means_uv_defaults():
    assert uv_sources.uv_flags({}) == ["--index-strategy", "unsafe-best-match"]
    assert uv_sources.uv_flags({"cert": "/ca.pem"})[-1] == "--native-tls"
