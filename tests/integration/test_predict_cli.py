"""`bliss mode=predict` with no arguments catalogs the shipped sample image with the shipped model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import QTable, Table

import bliss

PACKAGE = Path(bliss.__file__).parent
MODEL = PACKAGE / "models" / "sdss_generalist.ckpt"
TRUTH = PACKAGE / "sample_data" / "sdss_sample_truth.fits"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bliss.cli.main",
            "mode=predict",
            f"paths.root={root}",
            f"hydra.run.dir={root}/hydra",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return root / "outputs" / "predict"


def test_writes_catalog_png_and_config(predicted):
    for name in (
        "sdss_sample_catalog.fits",
        "sdss_sample_catalog.reg",
        "sdss_sample_catalog.png",
        "sdss_sample_catalog.config.yaml",
    ):
        assert (predicted / name).exists(), name
    table = QTable.read(predicted / "sdss_sample_catalog.fits")
    assert table.meta["CKPTHASH"] and table.meta["BLISSVER"] == bliss.__version__


def test_finds_bright_sample_sources_at_the_right_positions(predicted):
    table = Table.read(predicted / "sdss_sample_catalog.fits")
    truth = Table.read(TRUTH)
    r_mag = 22.5 - 2.5 * np.log10(np.asarray(truth["flux_r"], dtype=float))
    bright = truth[r_mag < 20.0]
    assert len(bright) >= 3
    est = np.stack([np.asarray(table["x"]), np.asarray(table["y"])], -1)
    for source in bright:
        distance = np.hypot(est[:, 0] - source["x"], est[:, 1] - source["y"]).min()
        # r < 20 sources have S/N > 50 at SDSS depth: the posterior median lands well within 0.5 px
        assert distance < 0.5, (source["x"], source["y"], distance)


def test_n_samples_writes_joint_samples(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bliss.cli.main",
            "mode=predict",
            f"paths.root={tmp_path}",
            f"hydra.run.dir={tmp_path}/hydra",
            "predict.n_samples=3",
            f"predict.output={tmp_path}/cat.csv",
            "predict.plot=false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    samples = QTable.read(tmp_path / "cat_samples.csv")
    assert set(np.unique(samples["sample"])) == {0, 1, 2}
    assert (tmp_path / "cat.csv").exists() and not (tmp_path / "cat.png").exists()


def test_checkpoint_for_other_bands_is_refused(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bliss.cli.main",
            "mode=predict",
            "survey=des",
            f"paths.root={tmp_path}",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode != 0
    assert "bands" in out.stderr and not list(tmp_path.glob("outputs/predict/*.fits"))
    # the refusal names the surveys that have a shipped model
    assert "no model ships for survey=des" in out.stderr
    assert "survey=lsst_coadd (lsst_dc2.ckpt)" in out.stderr
