"""Every recipe under configs/ loads into its config class: no unknown keys, no bad types."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmkit.config import PretrainConfig, TrainConfig, build_config, load_yaml

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_recipes_exist():
    assert {p.name for p in RECIPES} >= {"demo.yaml", "classification.yaml", "pair.yaml", "regression.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path):
    cls = PretrainConfig if path.name.startswith("pretrain") else TrainConfig
    cfg = build_config(cls, path)
    raw = load_yaml(path)
    for key, value in raw.items():
        if not isinstance(value, dict):
            assert getattr(cfg, key) == value, key
