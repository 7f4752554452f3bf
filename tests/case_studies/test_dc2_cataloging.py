"""The dc2_cataloging baselines and scores on known answers, and the script end to end."""

import sys
from pathlib import Path

import galsim
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.encoder.checkpoint import CONFIG_KEY
from bliss.evaluate.hsm import distortion_to_shear
from bliss.protocols import SurveyImage
from tests.conftest import compose_config
from tests.unit.simulator.test_cosmos_population import _catalog

pytest.importorskip("photutils")
pytest.importorskip("skimage")  # deblend_sources
sys.path.insert(0, str(Path(__file__).parents[2] / "case_studies" / "dc2_cataloging"))
import evaluate_dc2  # noqa: E402
from dc2_baselines import hsm_shapes, photutils_catalog  # noqa: E402

SCALE = 0.2
SKY = 1000.0
MAGZERO = 30.0  # AB magnitude of one electron


def test_distortion_becomes_the_reduced_shear_kind():
    q = 0.5
    distortion = np.array([[(1 - q**2) / (1 + q**2), 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(distortion_to_shear(distortion), [[(1 - q) / (1 + q), 0], [0, 0]])


def _galaxy_image(g1: float, g2: float) -> tuple[SurveyImage, np.ndarray]:
    """One bright sheared exponential galaxy at (32.5, 30.5) (row, col), Moffat PSF, 1 band."""
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    galaxy = galsim.Exponential(half_light_radius=0.6, flux=2e5).shear(g1=g1, g2=g2)
    clean = galsim.Convolve(galaxy, psf).drawImage(
        nx=64, ny=64, scale=SCALE, offset=(30.5 - 32, 32.5 - 32)
    )
    rng = np.random.default_rng(0)
    pixels = rng.poisson(clean.array + SKY).astype(np.float32)
    image = SurveyImage(
        path=Path("synthetic"),
        bands=("r",),
        images=pixels[None],
        background=np.full((1, 64, 64), SKY, np.float32),
        psf_fwhm_arcsec=np.array([0.7], np.float32),
        magzero=np.array([MAGZERO]),
        wcs=None,
    )
    return image, psf.drawImage(nx=25, ny=25, scale=SCALE).array


def test_photutils_and_hsm_measure_an_isolated_sheared_galaxy():
    image, psf = _galaxy_image(0.2, -0.1)
    photo = photutils_catalog(image, "r", SCALE)
    assert len(photo["plocs"]) == 1
    np.testing.assert_allclose(photo["plocs"][0], [32.5, 30.5], atol=0.2)
    flux_nmgy = 2e5 * 10 ** (-0.4 * (MAGZERO - 22.5))
    # Kron apertures hold ~90-95 % of an exponential's light
    assert 0.85 * flux_nmgy < photo["fluxes"][0, 0] < 1.02 * flux_nmgy
    assert bool(photo["galaxy"][0])
    e = hsm_shapes(image, "r", psf, photo["plocs"], photo["segmentation"], photo["label"], SCALE)
    # REGAUSS on a well-resolved S/N ~ 500 galaxy: a few per cent of the shear
    np.testing.assert_allclose(e[0], [0.2, -0.1], atol=0.02)


def test_a_perfect_catalog_scores_perfectly():
    rng = np.random.default_rng(0)
    truth = {
        "plocs": rng.uniform(0, 100, (40, 2)),
        "fluxes": rng.uniform(0.05, 50, (40, 6)),
        "galaxy": rng.uniform(size=40) < 0.9,
        "e": rng.normal(0, 0.2, (40, 2)),
    }
    truth["plocs"][1] = truth["plocs"][0] + 2.0  # a blend (within 5 px)
    est = {
        **truth,
        "flux_lo": truth["fluxes"] * 0.9,
        "flux_hi": truth["fluxes"] * 1.1,
        "e_lo": truth["e"] - 0.1,
        "e_hi": truth["e"] + 0.1,
    }
    score = evaluate_dc2.summarise([evaluate_dc2.score_field(truth, est, 2, 2.5, 5.0)])
    assert score["f1"] == 1.0 and score["f1_blends"] == 1.0 and score["n_true_blended"] >= 2
    assert score["n_true_blended_to_depth"] <= score["n_true_blended"]
    assert score["star_galaxy_accuracy"] == 1.0 and score["flux_coverage90"] == 1.0
    assert score["e_rmse"] == [0.0, 0.0] and score["e_coverage90"] == [1.0, 1.0]
    # a catalog missing half the sources and adding as many spurious ones: precision and
    # recall 1/2
    half = {k: v[:20] for k, v in est.items()}
    half["plocs"] = np.concatenate([half["plocs"], rng.uniform(200, 300, (20, 2))])
    for key in ("fluxes", "flux_lo", "flux_hi"):
        half[key] = np.concatenate([half[key], np.ones((20, 6))])
    half["galaxy"] = np.concatenate([half["galaxy"], np.ones(20, bool)])
    for key in ("e", "e_lo", "e_hi"):
        half[key] = np.concatenate([half[key], np.zeros((20, 2))])
    assert evaluate_dc2.summarise([evaluate_dc2.score_field(truth, half, 2, 2.5, 5.0)])[
        "f1"
    ] == pytest.approx(0.5)


def test_shapes_are_compared_on_the_galaxies_every_method_measured():
    # four bright galaxies; the network's e errors 0.1 on the first two, 0.3 on the last two;
    # HSM measures only the first two (the others NaN), with error 0.2
    truth = {
        "plocs": np.stack([np.arange(4) * 20.0, np.zeros(4)], -1),
        "fluxes": np.full((4, 6), 10.0),  # r = 20
        "galaxy": np.ones(4, bool),
        "e": np.zeros((4, 2)),
    }
    ours = {**truth, "e": np.repeat([[0.1], [0.1], [0.3], [0.3]], 2, 1)}
    hsm = {**truth, "e": np.array([[0.2, 0.2], [0.2, 0.2], [np.nan] * 2, [np.nan] * 2])}
    field = {
        method: evaluate_dc2.score_field(truth, est, 2, 2.5, 5.0)
        for method, est in (("bliss", ours), ("photutils", hsm))
    }
    evaluate_dc2.mark_common_shapes(field)
    bliss, photo = (evaluate_dc2.summarise([field[m]]) for m in ("bliss", "photutils"))
    # over each method's own galaxies the network looks worse than HSM (sqrt(0.05) > 0.2) ...
    assert bliss["e_rmse"][0] == pytest.approx(np.sqrt((2 * 0.01 + 2 * 0.09) / 4))
    assert photo["e_rmse"][0] == pytest.approx(0.2) and photo["e_measured_share"] == 0.5
    # ... on the two both measured it is half HSM's error
    assert bliss["e_common_count"] == photo["e_common_count"] == 2
    assert bliss["e_rmse_common"] == pytest.approx([0.1, 0.1])
    assert photo["e_rmse_common"] == pytest.approx([0.2, 0.2])


def test_a_visit_scores_in_its_own_shallower_bins():
    # one source per visit bin (r 16-21, 21-22, 22-23, 23-24, 24-24.7), each found but the last
    mags = np.array([18.0, 21.5, 22.5, 23.5, 24.3])
    truth = {
        "plocs": np.stack([np.arange(5) * 20.0, np.zeros(5)], -1),
        "fluxes": np.repeat(10 ** (-0.4 * (mags - 22.5))[:, None], 6, 1),
        "galaxy": np.array([False, True, True, True, True]),
        "e": np.zeros((5, 2)),
    }
    found = {k: v[:4].copy() for k, v in truth.items()}
    found["galaxy"][3] = False  # the r 23.5 galaxy called a star
    visit = evaluate_dc2.summarise(
        [evaluate_dc2.score_field(truth, found, 2, 2.5, 5.0)], evaluate_dc2.DEPTHS["lsst"]
    )
    assert visit["f1_per_bin"] == [1.0, 1.0, 1.0, 1.0, 0.0]
    # all five are brighter than the visit's r = 24.7: recall 4/5, precision 1
    assert visit["f1_to_depth"] == pytest.approx(2 * 0.8 / 1.8)
    # the coadd's bins (16-22, ..., 24-25.7, 25.7-26.5) hold the missed source in the fourth
    coadd = evaluate_dc2.summarise([evaluate_dc2.score_field(truth, found, 2, 2.5, 5.0)])
    assert coadd["f1_per_bin"] == [1.0, 1.0, 1.0, 0.0, 0.0]
    # types are scored at r < 23 on a visit, r < 24 on the coadd: only the coadd counts the
    # misclassified r 23.5 galaxy
    assert visit["star_galaxy_accuracy"] == 1.0
    assert coadd["star_galaxy_accuracy"] == pytest.approx(0.75)


def test_the_script_runs_end_to_end_with_an_untrained_model(tmp_path):
    path = _catalog(tmp_path / "c.fits", [(20.0, 0.4, 0.0), (22.0, 1.0, 1.0), (23.0, 0.8, 0.5)])
    cfg = compose_config(["mode=train", "experiment=debug", "survey=lsst_coadd"], tmp_path)
    torch.manual_seed(0)
    encoder = instantiate(cfg.encoder)
    checkpoint = tmp_path / "untrained.ckpt"
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": encoder.state_dict(), CONFIG_KEY: config}, checkpoint)
    results = evaluate_dc2.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--n-fields",
            "2",
            "--image-size",
            "48",
            "--out",
            str(tmp_path / "out"),
            # an untrained model calls hundreds of noise peaks bright galaxies: no model fits
            "--network-fluxes",
            f"prior.galaxy_shape_catalog.path={path}",
            "prior.density_per_arcmin2=400",
        ]
    )
    assert set(results) == {"in_prior", "sersic"}
    for scores in results.values():
        assert set(scores) == {"bliss", "sep", "photutils"}
        assert scores["sep"]["n_true"] > 10
        assert 0.0 <= scores["photutils"]["f1"] <= 1.0
    assert (tmp_path / "out" / "dc2.md").read_text().count("| F1 |") == 2
