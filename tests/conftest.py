"""Shared fixtures: seeding, the --gpu flag and tiny composed configs."""

import random

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

TINY_OVERRIDES = [
    "experiment=debug",
    "simulator.image_size=16",
    "generate.n_shards=3",
    "generate.images_per_shard=2",
    "data.batch_size=2",
    "trainer.max_steps=2",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gpu", action="store_true", default=False, help="run tests marked gpu on CUDA"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--gpu"):
        if not torch.cuda.is_available():
            raise pytest.UsageError(
                "--gpu was given but torch sees no CUDA device on this machine."
            )
        return
    skip = pytest.mark.skip(reason="needs --gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def compose_config(overrides: list[str] | None = None, tmp_path=None) -> DictConfig:  # noqa: ANN001
    """Compose the real bliss config with overrides; outputs go under ``tmp_path``."""
    paths = []
    if tmp_path is not None:
        paths = [f"paths.root={tmp_path}", f"paths.run_dir={tmp_path}/run"]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        return compose("config", overrides=[*paths, *(overrides or [])])


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:  # noqa: ANN001
    """A tiny CPU config: 16 x 16 px images, 3 shards of 2 images, 2 training steps."""
    return compose_config(["mode=generate", *TINY_OVERRIDES], tmp_path)
