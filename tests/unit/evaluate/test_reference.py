"""The photoObj comparison end to end on the SDSS cut-out, with a stand-in predictor."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from hydra.utils import instantiate

from bliss.evaluate.reference import compare_image_with_reference, format_reference_results
from bliss.surveys.sdss.photoobj import find_photoobj, read_photoobj
from tests.conftest import compose_config, one_image_catalog
from tests.unit.surveys.conftest import SDSS_CUTOUTS


class EchoPredictor:
    """Reports the reference objects themselves, plus one spurious source."""

    def __init__(self, table):
        self.encoder = SimpleNamespace(bands=tuple("ugriz"))
        self.table = table

    def predict(self, image, threshold, quantiles):
        t = self.table
        fluxes = np.stack([t[f"flux_{b}"].value for b in "ugriz"], -1)
        fluxes = np.concatenate([fluxes, np.full((1, 5), 10.0)])
        sources = {
            "row": np.append(t["y"].value + 0.5, 150.5),
            "col": np.append(t["x"].value + 0.5, 40.5),
            "prob_galaxy": np.append(t["source_type"] == 1, 0.0).astype(float),
            "fluxes": fluxes,
        }
        for q in quantiles:
            sources[f"fluxes@{q:g}"] = fluxes
        _, height, width = image.images.shape
        return one_image_catalog(sources, height, width)


@pytest.fixture(scope="module")
def cutout(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    cfg = compose_config(
        ["mode=evaluate", "survey=sdss_frames", f"survey.data_dir={SDSS_CUTOUTS}"], tmp
    )
    survey = instantiate(cfg.survey)
    image = survey.load_image(tuple(survey.bands))
    table = read_photoobj(find_photoobj(SDSS_CUTOUTS, 94, 1, 12), shape=(192, 192))
    return survey, image, table


def test_cutout_end_to_end(cutout, tmp_path):
    survey, image, table = cutout
    results = compare_image_with_reference(
        EchoPredictor(table),
        survey,
        image,
        table,
        threshold=0.5,
        match_dist_px=1.5,
        mag_bins=[14, 20, 24],
        output=tmp_path,
        n_examples=2,
    )
    ours = results["bliss"]["all"]
    assert ours["n_reference"] == 4  # the 5th object has a negative r flux: no magnitude
    assert ours["completeness"] == 1.0 and ours["type_agreement"] == 1.0
    assert ours["purity"] == pytest.approx(4 / 5)
    assert ours["delta_mag_median"] == pytest.approx(0.0, abs=1e-5)
    assert results["disagreements"]["bliss_only"]["n"] == 1
    # sep finds the bright isolated star
    assert results["sep"]["per_bin"][0]["completeness"] == 1.0
    text = format_reference_results(results)
    assert text.splitlines()[0].startswith("r mag") and len(text.splitlines()) == 4
    for name in (
        "reference_metrics.json",
        "reference_metrics.csv",
        "reference_overlay.png",
        "reference_delta_mag.png",
        "disagreements.csv",
        "disagreements.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "reference_metrics.json").read_text())["bliss"]["all"]
    csv = (tmp_path / "reference_metrics.csv").read_text().splitlines()
    assert csv[0].startswith("catalog,mag_lo,mag_hi,n_reference,completeness")
    assert len(csv) == 1 + 2 * 3


def test_sdss_frames_give_the_encoder_a_seeing_map(cutout):
    _, image, _ = cutout
    assert image.psf_fwhm_map.shape == image.images.shape
    assert np.allclose(image.psf_fwhm_map.mean(axis=(1, 2)), image.psf_fwhm_arcsec, rtol=0.02)
