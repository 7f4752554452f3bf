"""The psf_variation case study's Stripe 82 reader and epoch-scatter statistic on known answers."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from bliss.errors import BlissIOError

sys.path.insert(0, str(Path(__file__).parents[2] / "case_studies" / "psf_variation"))
import epoch_scatter  # noqa: E402
from stripe82 import BANDS, PIXEL_SCALE_ARCSEC, mixture_psf, read_epochs  # noqa: E402

SIZE = 51
NMGY, SKY = 0.005, 130.0  # nanomaggies per count; counts at the centre
K_TRUE = 0.0012  # nanomaggies of one electron, as the inverse variance says
RA0, DEC0 = 5.0, 0.07


def psf_header(sigma_px: float, second: tuple[float, float] = (0.0, 9.0)) -> dict:
    """``PSF_P*`` cards: a core Gaussian of ``sigma_px`` and a wing of (amplitude, variance)."""
    amp2, var2 = second
    cards = {"PSF_P0": 1.0 - amp2, "PSF_P1": amp2, "PSF_P2": 0.0}
    for k in range(3, 9):
        cards[f"PSF_P{k}"] = 0.0
    for k, var in enumerate((sigma_px**2, var2, 16.0)):
        cards[f"PSF_P{9 + 3 * k}"] = var
        cards[f"PSF_P{10 + 3 * k}"] = var
        cards[f"PSF_P{11 + 3 * k}"] = 0.0
    return cards


def write_cutout(directory: Path, n_epochs: int = 3, star_nmgy: float = 40.0) -> None:
    """A cut-out in the shared data's format: a star at the centre, Gaussian PSFs, sky noise.

    The last epoch misses its upper-left corner (inverse variance 0), as the shared data's
    frame-edge epochs do; PHOTO's catalog holds the star and an object off the cut-out in every
    epoch.
    """
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    sky_nmgy = SKY * NMGY
    for band in BANDS:
        hdus = []
        for e in range(n_epochs):
            sigma = 1.2 + 0.3 * e
            star = star_nmgy * np.exp(-(x**2 + y**2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
            var = K_TRUE * (sky_nmgy + star)
            image = star + rng.normal(0, np.sqrt(var))
            ivar = 1.0 / var
            if e == n_epochs - 1:
                ivar[:20, :20] = 0.0
                image[:20, :20] = 0.0
            header = fits.Header(
                {
                    "CTYPE1": "RA---TAN",
                    "CTYPE2": "DEC--TAN",
                    "CRVAL1": RA0,
                    "CRVAL2": DEC0,
                    "CRPIX1": SIZE // 2 + 1,
                    "CRPIX2": SIZE // 2 + 1,
                    "CD1_1": -PIXEL_SCALE_ARCSEC / 3600,
                    "CD2_2": PIXEL_SCALE_ARCSEC / 3600,
                    "RUN": 100 + e,
                    "CAMCOL": 4,
                    "FIELD": 10 + e,
                    "NMGY": NMGY,
                    "SKY": SKY,
                    "GAIN": 4.7,
                    **psf_header(sigma),
                }
            )
            kind = fits.ImageHDU if hdus else fits.PrimaryHDU
            hdus.append(kind(image.astype(np.float32), header=header))
            hdus.append(fits.ImageHDU(ivar.astype(np.float32)))
        fits.HDUList(hdus).writeto(directory / f"stamp-{band}-{RA0}-{DEC0}.fits")
    rows = Table(
        {
            "ra": [RA0] * n_epochs + [RA0 + 0.01] * n_epochs,
            "dec": [DEC0] * 2 * n_epochs,
            "run": [100 + e for e in range(n_epochs)] * 2,
        }
    )
    for band in BANDS:
        rows[f"cmodelflux_{band}"] = [star_nmgy] * (2 * n_epochs)
    rows.write(directory / f"cat-{RA0}-{DEC0}.fits")


@pytest.fixture(scope="module")
def cutout(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("s82")
    write_cutout(directory)
    return directory


def test_mixture_psf_is_the_gaussian_it_describes():
    sigma = 2.0
    psf = mixture_psf(fits.Header(psf_header(sigma, second=(0.0, 9.0))))
    assert psf.shape == (25, 25) and psf.sum() == pytest.approx(1.0)
    axis = np.arange(25) - 12
    # pixel integration adds 1/12 px^2 to the variance of a sampled Gaussian
    var_x = (psf.sum(axis=0) * axis**2).sum()
    assert var_x == pytest.approx(sigma**2 + 1 / 12, rel=0.01)
    wide = mixture_psf(fits.Header(psf_header(sigma, second=(0.3, 9.0))))
    assert (wide.sum(axis=0) * axis**2).sum() == pytest.approx(
        0.7 * 4.0 + 0.3 * 9.0 + 1 / 12, rel=0.01
    )


def test_mixture_psf_refuses_a_covariance_that_is_not_positive_definite():
    cards = psf_header(1.5)
    cards["PSF_P11"] = 3.0  # xy^2 > xx yy
    with pytest.raises(BlissIOError, match="PSF component 0"):
        mixture_psf(fits.Header(cards))


def test_read_epochs_takes_the_noise_from_the_inverse_variance(cutout):
    epochs = read_epochs(cutout)
    assert [(e.run, e.field) for e in epochs] == [(100, 10), (101, 11), (102, 12)]
    for epoch in epochs:
        np.testing.assert_allclose(epoch.nmgy_per_electron, K_TRUE, rtol=0.01)
        image = epoch.image
        assert image.bands == BANDS and image.images.shape == (5, SIZE, SIZE)
        np.testing.assert_allclose(image.magzero, 22.5 - 2.5 * math.log10(K_TRUE), atol=0.01)
        # the sky in electrons, and the pixel noise is Poisson in electrons
        np.testing.assert_allclose(image.background[:, 0, 0], SKY * NMGY / K_TRUE, rtol=0.01)
        corner = image.images[2, 30:, 30:] if epoch.run == 102 else image.images[2, :15, :15]
        assert np.nanstd(corner) ** 2 == pytest.approx(SKY * NMGY / K_TRUE, rel=0.2)
    assert np.isnan(epochs[-1].image.images[:, :20, :20]).all()
    assert not np.isnan(epochs[0].image.images).any()
    # seeing grows with the epoch
    fwhm = [e.image.psf_fwhm_arcsec[2] for e in epochs]
    assert fwhm[0] < fwhm[1] < fwhm[2]


def test_read_epochs_refuses_bands_from_different_frames(tmp_path):
    write_cutout(tmp_path, n_epochs=2)
    path = tmp_path / f"stamp-g-{RA0}-{DEC0}.fits"
    with fits.open(path, mode="update") as hdus:
        hdus[2].header["RUN"] = 999
    with pytest.raises(BlissIOError, match="epoch 1 is frame"):
        read_epochs(tmp_path)


def test_loo_residuals_have_unit_spread_only_with_the_right_sigmas():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 2.0, size=(2000, 10))
    values = 5.0 + sigma * rng.normal(size=sigma.shape)
    z = np.concatenate(
        [
            epoch_scatter.loo_residuals(np.stack([v, s], 1))
            for v, s in zip(values, sigma, strict=True)
        ]
    )
    # 20000 residuals: the sd's standard error is 0.005 (they are mildly correlated within objects)
    assert np.std(z) == pytest.approx(1.0, abs=0.03)
    halved = np.concatenate(
        [
            epoch_scatter.loo_residuals(np.stack([v, s / 2], 1))
            for v, s in zip(values, sigma, strict=True)
        ]
    )
    assert np.std(halved) == pytest.approx(2.0, abs=0.1)
    short = np.array([[1.0, 0.1], [np.nan, np.nan], [2.0, 0.1]])
    assert len(epoch_scatter.loo_residuals(short)) == 0


def test_epoch_scatter_runs_on_a_cutout_with_the_shipped_model(cutout, tmp_path):
    report = epoch_scatter.main(["--data", str(cutout), "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} >= {
        "epoch_scatter.json",
        "epoch_scatter.md",
        "epoch_scatter.png",
    }
    # the far object is off the cut-out; the star is found in the two whole epochs and the one
    # that misses a corner away from it
    assert len(report["objects"]) == 1
    aware = report["runs"]["psf_aware"]
    assert aware["detected_per_object"] == [3]
    (row,) = aware["per_object_r"]
    assert row["photo_epochs"] == 3 and 0 < row["bliss_rel_sigma"] < 0.2
    assert aware["spread"]["flux_r"]["n"] == 3
    assert report["config"]["checkpoint_sha256"]


def _full_catalog(plocs: list, r_mags: list):
    import torch

    from bliss.catalog import FullCatalog

    n = len(plocs)
    fluxes = torch.zeros(1, max(n, 1), 5)
    fluxes[0, :n, 2] = torch.tensor([10 ** (-0.4 * (m - 22.5)) for m in r_mags])
    return FullCatalog(
        16,
        16,
        {
            "n_sources": torch.tensor([n]),
            "plocs": torch.tensor(plocs, dtype=torch.float32).reshape(1, max(n, 1), 2),
            "fluxes": fluxes,
        },
    )


def test_per_image_counts_and_the_paired_bootstrap():
    import evaluate_psf
    import torch

    truth = _full_catalog([[2.0, 2.0], [8.0, 8.0], [12.0, 3.0]], [21.5, 21.2, 19.0])
    est = _full_catalog([[2.2, 2.0], [12.0, 12.0]], [21.4, 21.8])  # one match in 21-22
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    counts = evaluate_psf._image_counts(truth, est, matches, 21.0, 22.0)
    # true in bin: 2, matched 1; estimates in bin: 2, matched 1
    np.testing.assert_array_equal(counts, [[2, 1, 2, 1]])
    assert evaluate_psf._f1(counts) == pytest.approx(0.5)
    # two models on 200 images: one finds every source, the other half of them
    perfect = np.tile([10, 10, 10, 10], (200, 1))
    half = np.tile([10, 5, 5, 5], (200, 1))
    types = {"aware": np.tile([10, 9], (200, 1)), "blind": np.tile([10, 8], (200, 1))}
    models = {
        m: {"_counts": {"all": c, "21-22": c, "types": types[m]}}
        for m, c in (("aware", perfect), ("blind", half))
    }
    diff = evaluate_psf.paired_differences(models, n_boot=50)
    # F1 of the half: precision 1, recall 0.5 -> 2/3
    assert diff["aware-blind F1 all"]["difference"] == pytest.approx(1 - 2 / 3)
    assert diff["aware-blind F1 all"]["bootstrap_se"] == pytest.approx(0.0, abs=1e-12)
    assert diff["aware-blind star/galaxy accuracy"]["difference"] == pytest.approx(0.1)
    assert "aware-fwhm F1 all" not in diff  # pairs need both models


def test_the_study_models_score_a_small_out_of_range_set():
    import evaluate_psf

    from bliss.catalog.full import concat_full_catalogs
    from bliss.encoder.checkpoint import load_encoder

    models = Path(evaluate_psf.__file__).parent / "models"
    aware, _ = load_encoder(models / "psf_aware.ckpt")
    blind, _ = load_encoder(models / "psf_blind.ckpt")
    assert aware.normalizer.psf_shape and not blind.normalizer.psf_aware
    batches = evaluate_psf.simulate_set("out_of_range", 8, seed=3, chunk=4)
    assert len(batches) == 2 and batches[0]["psf_shape"].shape == (4, 5, 3)
    assert float(batches[0]["psf_fwhm_arcsec"][:, 2].min()) >= 2.1
    truth = concat_full_catalogs([b["catalog"].to_full_catalog() for b in batches])
    est = concat_full_catalogs([evaluate_psf.estimate(aware, b) for b in batches])
    score = evaluate_psf.score(truth, est)
    assert score["n_true"] > 5 and 0.0 < score["f1"] <= 1.0
    assert 0.0 <= score["coverage_flux_r"] <= 1.0 and set(score["f1_per_bin"]) == {
        "14-20",
        "20-21",
        "21-22",
        "22-22.5",
    }
