"""The ablation experiments are valid params and each differs from the default run (scripts/ablations.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bodymap.config import load_params, parse_override

ROOT = Path(__file__).resolve().parents[1]


def _ablations():
    spec = importlib.util.spec_from_file_location("ablations", ROOT / "scripts" / "ablations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPERIMENTS = _ablations().EXPERIMENTS


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_each_experiment_validates_and_changes_the_default(name: str) -> None:
    _, _, overrides = EXPERIMENTS[name]
    default = load_params(ROOT / "params.yaml").model_dump(mode="json")
    changed = load_params(ROOT / "params.yaml", overrides).model_dump(mode="json")
    assert changed != default
    for text in overrides:
        keys, _ = parse_override(text)
        node = default
        for key in keys:  # dvc exp run --set-param edits params.yaml, so every key must already be there
            assert key in node, f"{name}: {text} names a key params.yaml's schema does not have"
            node = node[key]


def test_default_rows_name_every_table_once() -> None:
    module = _ablations()
    tables = [table for table, *_ in module.EXPERIMENTS.values()]
    assert sorted({t for t, _ in module.DEFAULT_ROWS}) == sorted(set(tables))
    assert len(module.DEFAULT_ROWS) == len(set(tables))
