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


def catalog_columns(catalog) -> dict[str, np.ndarray]:  # noqa: ANN001
    """A one-image FullCatalog's keys as numpy arrays (``n``, or ``n d``), plus ``row`` / ``col``."""
    assert catalog.batch_size == 1
    n = int(catalog["n_sources"][0])
    out = {k: v[0, :n].numpy() for k, v in catalog.items() if k != "n_sources"}
    out = {k: v[:, 0] if v.ndim == 2 and v.shape[1] == 1 else v for k, v in out.items()}
    out["row"], out["col"] = out["plocs"][:, 0], out["plocs"][:, 1]
    return out


def one_image_catalog(columns: dict, height: int, width: int):  # noqa: ANN201
    """A one-image FullCatalog from numpy columns (``row``, ``col`` and ``n`` / ``n d`` others)."""
    from bliss.catalog import FullCatalog

    n = len(columns["row"])
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": torch.from_numpy(np.stack([columns["row"], columns["col"]], -1)).float()[None],
    }
    for key, value in columns.items():
        if key not in ("row", "col"):
            data[key] = torch.from_numpy(np.asarray(value, float).reshape(n, -1)).float()[None]
    return FullCatalog(height, width, data)
