"""`bliss mode=predict` over a glob / list of images or SDSS fields: one catalog each, merged."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import QTable

from bliss.cli.generate import build_simulator
from bliss.cli.main import run
from bliss.errors import BlissConfigError, BlissIOError
from bliss.simulator.field import write_simulated_field
from tests.conftest import compose_config

SDSS = Path(__file__).parents[1] / "data" / "sdss"
NAMES = ["field_0", "field_1", "field_2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three 48 x 48 px, 5-band simulated fields with a few bright stars each."""
    folder = tmp_path_factory.mktemp("images")
    cfg = compose_config(
        [
            "mode=generate",
            "simulator.image_size=48",
            "prior.density_per_arcmin2=150",
            "prior.prob_galaxy=0.0",
            "prior.star_flux.min_nmgy=30.0",
        ],
        folder,
    )
    simulator = build_simulator(cfg)
    for seed, name in enumerate(NAMES):
        write_simulated_field(simulator, seed, folder / f"{name}.fits", folder / f"{name}.truth")
    return folder


def _predict(root: Path, *overrides: str) -> dict:
    options = ["mode=predict", "predict.plot=false", "trainer.enable_progress_bar=false"]
    return run(compose_config([*options, *overrides], root))


@pytest.fixture(scope="module")
def cataloged(images: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The three images cataloged through a glob."""
    output = tmp_path_factory.mktemp("catalogs") / "out"
    result = _predict(images, f"predict.input={images}/*.fits", f"predict.output={output}")
    return output, result


def test_glob_writes_one_catalog_per_input_and_a_merged_dataset(cataloged):
    output, result = cataloged
    assert [s["status"] for s in result["inputs"]] == ["done"] * 3
    counts = {}
    for name in NAMES:
        table = QTable.read(output / f"{name}.fits")
        counts[name] = len(table)
        assert table.meta["INPUT"].endswith(f"{name}.fits")
        # every catalog names the config file that made it
        assert (output / f"config-{table.meta['CFGHASH']}.yaml").is_file()
    assert sum(counts.values()) > 0

    merged = pd.read_parquet(output / "merged.parquet")
    assert len(merged) == result["n_sources"] == sum(counts.values())
    assert merged.groupby("input", observed=True).size().to_dict() == {
        name: n for name, n in counts.items() if n
    }
    assert {"ra", "dec", "flux_r", "prob_source"} <= set(merged.columns)
    # a part file alone is an astropy table with units
    part = QTable.read(output / "merged.parquet" / "input=field_0" / "part-0.parquet")
    assert part["flux_r"].unit == "nmgy" and len(part) == counts["field_0"]


def test_a_rerun_skips_complete_inputs_and_redoes_the_others(images, cataloged, tmp_path, caplog):
    output = tmp_path / "out"
    shutil.copytree(cataloged[0], output)
    (output / "field_1.fits").unlink()  # as if the run had died while writing it
    mtimes = {name: (output / f"{name}.fits").stat().st_mtime_ns for name in ("field_0", "field_2")}

    with caplog.at_level(logging.INFO, logger="bliss.predict.loop"):
        result = _predict(images, f"predict.input={images}/*.fits", f"predict.output={output}")

    assert [s["status"] for s in result["inputs"]] == ["skipped", "done", "skipped"]
    assert {n: (output / f"{n}.fits").stat().st_mtime_ns for n in mtimes} == mtimes
    assert sum("skip" in message for message in caplog.messages) == 2
    assert len(pd.read_parquet(output / "merged.parquet")) == cataloged[1]["n_sources"]


def test_a_rerun_with_another_threshold_refuses_the_old_catalogs(images, cataloged, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(cataloged[0], output)
    with pytest.raises(BlissIOError, match="another catalog config") as info:
        _predict(
            images,
            f"predict.input={images}/*.fits",
            f"predict.output={output}",
            "predict.threshold=0.9",
        )
    assert "field_0.json" in str(info.value)


def _bliss(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """Run the ``bliss`` command in ``tmp_path`` as a user does."""
    command = Path(sys.executable).with_name("bliss")
    return subprocess.run(
        [
            str(command) if command.exists() else shutil.which("bliss"),
            "mode=predict",
            *overrides,
            "predict.plot=false",
            "trainer.enable_progress_bar=false",
            f"paths.root={tmp_path}",
            f"hydra.run.dir={tmp_path}/h",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


def test_a_missing_file_is_named_the_others_are_cataloged_and_the_exit_is_nonzero(images, tmp_path):
    missing = tmp_path / "no_such_field.fits"
    inputs = f"predict.input=[{images}/field_0.fits,{missing},{images}/field_2.fits]"
    out = _bliss(tmp_path, inputs, f"predict.output={tmp_path / 'out'}")

    assert out.returncode != 0
    error = [line for line in out.stderr.splitlines() if str(missing) in line]
    assert any("does not exist" in line for line in error), out.stderr[-2000:]
    assert "1 of 3 inputs failed" in out.stderr
    assert (tmp_path / "out" / "field_0.fits").exists()
    assert (tmp_path / "out" / "field_2.fits").exists()
    merged = tmp_path / "out" / "merged.parquet"
    partitions = sorted(p.name for p in merged.iterdir() if p.name.startswith("input="))
    assert partitions == ["input=field_0", "input=field_2"]


def test_sdss_fields_are_cataloged_one_by_one(tmp_path):
    with pytest.raises(BlissIOError, match="field 13") as info:
        _predict(
            tmp_path,
            "survey=sdss_frames",
            f"survey.data_dir={SDSS}",
            "survey.fields=[[94,1,12],[94,1,13]]",
            f"predict.output={tmp_path / 'out'}",
            "predict.format=parquet",
        )
    assert "1 of 2 inputs failed" in str(info.value)
    table = QTable.read(tmp_path / "out" / "sdss-000094-1-0012.parquet")
    assert len(table) > 0 and table.meta["INPUT"].endswith("94/1/12")
    merged = pd.read_parquet(tmp_path / "out" / "merged.parquet")
    assert set(merged["input"]) == {"sdss-000094-1-0012"} and len(merged) == len(table)


def test_an_output_file_name_with_several_inputs_is_refused(images, tmp_path):
    with pytest.raises(BlissConfigError, match="directory"):
        _predict(images, f"predict.input={images}/*.fits", f"predict.output={tmp_path}/cat.fits")
    assert not (tmp_path / "cat.fits").exists()


@pytest.mark.slow
def test_two_ranks_share_the_inputs(images, tmp_path):
    out = _bliss(
        tmp_path,
        f"predict.input={images}/*.fits",
        f"predict.output={tmp_path / 'out'}",
        "trainer=ddp_sim",
    )

    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 cataloged" in out.stdout
    records = [json.loads((tmp_path / "out" / f"{n}.json").read_text()) for n in NAMES]
    # Lightning's sampler deals the inputs out in turn: 0 and 2 to rank 0, 1 to rank 1
    assert [r["rank"] for r in records] == [0, 1, 0]


def test_many_inputs_take_the_sky_convention_and_write_check_images(images, tmp_path):
    """predict.sky and predict.check_images reach every input of a many-input run."""
    folder = tmp_path / "subtracted"
    folder.mkdir()
    from astropy.io import fits

    for name in NAMES[:2]:
        with fits.open(images / f"{name}.fits") as hdus:
            for hdu in hdus:
                if hdu.data is not None and hdu.name in "UGRIZ":
                    hdu.data = hdu.data - np.median(hdu.data)
            hdus.writeto(folder / f"{name}.fits")
    output = tmp_path / "out"
    overrides = [f"predict.input={folder}/*.fits", f"predict.output={output}"]
    with pytest.raises(BlissIOError, match="sky"):  # read as sky-included: refused
        _predict(images, *overrides)
    result = _predict(images, *overrides, "predict.sky=subtracted", "predict.check_images=true")
    assert [s["status"] for s in result["inputs"]] == ["done"] * 2
    for name in NAMES[:2]:
        with fits.open(output / f"{name}_check.fits") as check:
            assert len(check) > 1
        assert not (output / f"{name}_check.png").exists()  # predict.plot=false
