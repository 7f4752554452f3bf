"""`bliss mode=simulate` writes fields and truth tables that `mode=evaluate` scores as they are."""

import json
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table

from bliss.cli.main import run
from bliss.errors import BlissConfigError
from tests.conftest import compose_config

TINY = ["simulator.image_size=48", "simulate.n_fields=2", "prior.density_per_arcmin2=80"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("simulate")
    out = root / "sim"
    result = run(compose_config(["mode=simulate", *TINY, f"simulate.output={out}"], root))
    return root, result


def test_simulate_writes_fields_truths_and_config(simulated):
    root, result = simulated
    out = root / "sim"
    assert result["written"] == [0, 1] and result["skipped"] == []
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "field_0000.fits",
        "field_0001.fits",
        "truth_0000.fits",
        "truth_0001.fits",
    ]
    with fits.open(out / "field_0000.fits") as hdus:
        assert [h.name for h in hdus[1:]] == ["U", "G", "R", "I", "Z"]
        assert hdus["R"].data.shape == (48, 48)
        assert "MAGZERO" in hdus["R"].header
    truth = Table.read(out / "truth_0000.fits")
    for column in ("x", "y", "ra", "dec", "source_type", "flux_r", "mag_r", "disk_q"):
        assert column in truth.colnames, column
    assert truth.meta["SEED"] == 42 + 1_000_000


def test_evaluate_scores_the_simulated_fields(simulated):
    root, _ = simulated
    out = root / "sim"
    evaluation = root / "evaluation"
    run(
        compose_config(
            [
                "mode=evaluate",
                f"evaluate.input={out}/field_*.fits",
                f"evaluate.truth={out}/truth_*.fits",
                f"evaluate.output={evaluation}",
            ],
            root,
        )
    )
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert "bliss" in metrics


def test_rerun_keeps_complete_fields(simulated, capsys):
    root, _ = simulated
    out = root / "sim"
    before = (out / "field_0000.fits").stat().st_mtime_ns
    cfg = compose_config(
        ["mode=simulate", *TINY, "simulate.n_fields=3", f"simulate.output={out}"], root
    )
    result = run(cfg)
    assert result["skipped"] == [0, 1] and result["written"] == [2]
    assert (out / "field_0000.fits").stat().st_mtime_ns == before
    assert "kept 2 complete field(s)" in capsys.readouterr().out


def test_rerun_with_another_prior_is_refused(simulated):
    root, _ = simulated
    out = root / "sim"
    cfg = compose_config(
        ["mode=simulate", *TINY, "prior.prob_galaxy=0.0", f"simulate.output={out}"], root
    )
    with pytest.raises(BlissConfigError, match=r"simulate\.output=.*prior\.prob_galaxy"):
        run(cfg)


@pytest.mark.parametrize("value", ["0", "-1", "2.5"])
def test_bad_n_fields_names_the_key(tmp_path, value):
    cfg = compose_config(["mode=simulate", f"simulate.n_fields={value}"], tmp_path)
    with pytest.raises(BlissConfigError, match=r"simulate\.n_fields=.*expected an integer >= 1"):
        run(cfg)
    assert not (tmp_path / "outputs" / "simulate").exists()
