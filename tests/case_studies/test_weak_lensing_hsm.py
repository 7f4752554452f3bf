"""The weak_lensing case study's HSM baseline recovers a known constant shear, per region.

The scene: 36 exponential galaxies (hlr 0.4-0.6 arcsec, flux 1e6 electrons, so pixel noise is
a small part of the error budget) on a 6 x 6 grid 20 px (4 arcsec) apart, jittered by up to
1.5 px, at 0.2 arcsec/px under a Moffat PSF (FWHM 0.7 arcsec, beta 3.5), on a sky of 1000
electrons per pixel with Poisson noise, all lensed by one constant shear. The grid keeps every
galaxy's 25-px stamp inside the image and every galaxy 8.5 px from the 64-px region boundaries,
so all 36 are measured and each 64-px region holds 9.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from bliss.errors import BlissShapeError, BlissValueError, BlissWarning

galsim = pytest.importorskip("galsim")
pytest.importorskip("sep")

sys.path.insert(0, str(Path(__file__).parents[2] / "case_studies" / "weak_lensing"))
import hsm_baseline  # noqa: E402

PIXEL_SCALE = 0.2  # arcsec
SIDE_PX = 128
GRID = 6
SPACING_PX = 20
SKY = 1000.0  # electrons per pixel
FLUX = 1.0e6  # electrons
SHEAR = (0.05, -0.03)


def psf_image() -> np.ndarray:
    """The pixel-convolved Moffat PSF, 25 x 25 px, sum 1."""
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    image = psf.drawImage(nx=25, ny=25, scale=PIXEL_SCALE).array.astype(np.float64)
    return image / image.sum()


def lensed_scene(
    shear: tuple[float, float], seed: int, intrinsic_rms: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noisy scene (sky included), the true (row, col) centres and intrinsic distortions.

    Intrinsic distortion components are normal with standard deviation ``intrinsic_rms``,
    redrawn where ``|e| >= 0.9`` (GalSim refuses ``|e| >= 1``).
    """
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    # xmin = ymin = 0: GalSim's (x, y) are the array's (col, row) indices, centres at integers
    scene = galsim.ImageD(SIDE_PX, SIDE_PX, xmin=0, ymin=0, scale=PIXEL_SCALE)
    centres, intrinsic = [], []
    for row in range(GRID):
        for col in range(GRID):
            centre = 14.0 + SPACING_PX * np.array([row, col]) + rng.uniform(-1.5, 1.5, size=2)
            e1, e2 = rng.normal(0.0, intrinsic_rms, size=2)
            while np.hypot(e1, e2) >= 0.9:
                e1, e2 = rng.normal(0.0, intrinsic_rms, size=2)
            galaxy = (
                galsim.Exponential(half_light_radius=rng.uniform(0.4, 0.6), flux=FLUX)
                .shear(e1=e1, e2=e2)
                .shear(g1=shear[0], g2=shear[1])
            )
            # bliss (row, col) covers [row, row + 1): its pixel centre is GalSim's integer y
            stamp = galsim.Convolve(galaxy, psf).drawImage(
                nx=48, ny=48, scale=PIXEL_SCALE, center=(centre[1] - 0.5, centre[0] - 0.5)
            )
            overlap = stamp.bounds & scene.bounds
            scene[overlap] += stamp[overlap]
            centres.append(centre)
            intrinsic.append((e1, e2))
    noisy = rng.poisson(scene.array + SKY).astype(np.float64)
    return noisy, np.array(centres), np.array(intrinsic)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return lensed_scene(SHEAR, seed=3)


def test_round_galaxies_recover_the_shear(scene) -> None:
    """Every galaxy is measured and the whole-image shear is within 6% of g per component.

    Over seeds 0-19 this scene gives g1 / 0.05 - 1 = +0.5% +- 0.9% (extremes -0.9%, +2.0%) and
    g2 / -0.03 - 1 = -2.7% +- 0.9% (extremes -4.3%, -0.7%). Two effects: REGAUSS's own
    multiplicative bias on these exponentials (-1.2% to -1.7% on isolated noiseless galaxies;
    -1.9%, -1.6% on the same scene with the galaxies 44 px apart), and the light of the
    neighbours 20 px away (+2.2% on g1, -1% on g2; +4% on g1 without the segmentation mask).
    """
    image, centres, _ = scene
    result = hsm_baseline.hsm_region_shear(
        image, SKY, psf_image(), PIXEL_SCALE, None, shape_noise=0
    )
    assert result["shear"].shape == (1, 1, 2)
    assert result["n_galaxies"].tolist() == [[GRID**2]]
    assert result["responsivity"] == 1.0
    shear = result["shear"][0, 0]
    np.testing.assert_allclose(shear, SHEAR, rtol=0.06)
    # the positions are bliss (row, col): every true centre has a measured one within 0.3 px
    distance = np.linalg.norm(centres[:, None] - result["positions"][None], axis=-1)
    assert distance.min(axis=1).max() < 0.3


def test_region_map(scene) -> None:
    """Each 2 x 2 region holds 9 galaxies and its mean shear is within 0.003 of g.

    The largest departure over seeds 0-19, the four regions and both components was 0.0020.
    """
    image, _, _ = scene
    whole = hsm_baseline.hsm_region_shear(image, SKY, psf_image(), PIXEL_SCALE, None, shape_noise=0)
    result = hsm_baseline.hsm_region_shear(image, SKY, psf_image(), PIXEL_SCALE, 64, shape_noise=0)
    assert result["shear"].shape == (2, 2, 2)
    assert result["n_galaxies"].tolist() == [[9, 9], [9, 9]]
    assert result["n_galaxies"].sum() == len(result["positions"]) == len(result["e"])
    np.testing.assert_allclose(result["shear"], np.broadcast_to(SHEAR, (2, 2, 2)), atol=0.003)
    # the regions' mean is the whole image's mean (equal counts)
    np.testing.assert_allclose(result["shear"].mean(axis=(0, 1)), whole["shear"][0, 0])


@pytest.mark.parametrize("shear", [(0.0, 0.05), (0.05, 0.0), (-0.05, 0.0), (0.0, -0.05)])
def test_sign_convention(shear) -> None:
    """GalSim's signs: g1 > 0 stretches along the columns, g2 > 0 along row = col."""
    image, _, _ = lensed_scene(shear, seed=11)
    result = hsm_baseline.hsm_region_shear(
        image, SKY, psf_image(), PIXEL_SCALE, None, shape_noise=0
    )
    np.testing.assert_allclose(result["shear"][0, 0], shear, atol=0.004)


def test_measured_shape_noise() -> None:
    """``"measured"`` finds the intrinsic distortion RMS and divides by R = 1 - e_rms^2."""
    image, _, intrinsic = lensed_scene((0.0, 0.0), seed=5, intrinsic_rms=0.3)
    result = hsm_baseline.hsm_region_shear(
        image, SKY, psf_image(), PIXEL_SCALE, None, shape_noise="measured"
    )
    assert len(result["e"]) == GRID**2
    truth = np.sqrt(np.var(intrinsic, axis=0, ddof=1).mean())
    assert abs(result["e_rms"] - truth) < 0.02, (result["e_rms"], truth)
    assert result["responsivity"] == pytest.approx(1 - result["e_rms"] ** 2)
    np.testing.assert_allclose(
        result["shear"][0, 0], result["e"].mean(axis=0) / (2 * result["responsivity"])
    )


def test_distortion_rms() -> None:
    assert hsm_baseline.distortion_rms(0.0) == 0.0
    # small ellipticities: e ~ 2 g
    assert hsm_baseline.distortion_rms(0.01) == pytest.approx(0.02, rel=1e-3)
    assert hsm_baseline.distortion_rms(0.26) == pytest.approx(0.4209, abs=1e-3)
    with pytest.raises(BlissValueError, match="shape_noise=0.7"):
        hsm_baseline.distortion_rms(0.7)


def test_empty_image_warns_and_gives_nan() -> None:
    image = np.random.default_rng(0).poisson(SKY, (64, 64)).astype(np.float64)
    with pytest.warns(BlissWarning, match="no galaxy was measured"):
        result = hsm_baseline.hsm_region_shear(image, SKY, psf_image(), PIXEL_SCALE, 32)
    assert np.isnan(result["shear"]).all() and result["shear"].shape == (2, 2, 2)
    assert result["n_galaxies"].sum() == 0 and result["positions"].shape == (0, 2)


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.zeros((128, 128)), {"region_px": 48}, BlissValueError, "region_px=48"),
        (np.zeros((128, 128)), {"region_px": 0}, BlissValueError, "region_px=0"),
        (np.zeros((2, 64, 64)), {}, BlissShapeError, "expected one band"),
        (np.zeros(64), {}, BlissShapeError, "expected one band"),
        (np.zeros((64, 64)), {"background": 0.0}, BlissValueError, "background=0.0"),
        (np.zeros((64, 64)), {"stamp_px": 4}, BlissValueError, "stamp_px=4"),
        (np.zeros((64, 64)), {"shape_noise": -0.1}, BlissValueError, "shape_noise=-0.1"),
        (np.zeros((64, 64)), {"psf": np.ones((4, 4)) / 16}, BlissValueError, "odd sides"),
        (np.zeros((64, 64)), {"psf": np.ones((5, 5))}, BlissValueError, "sums to 25"),
    ],
)
def test_bad_inputs_raise_clear_errors(image, kwargs, error, match) -> None:
    args = {"background": SKY, "psf": psf_image(), "region_px": None, **kwargs}
    psf, background, region_px = args.pop("psf"), args.pop("background"), args.pop("region_px")
    with pytest.raises(error, match=match):
        hsm_baseline.hsm_region_shear(image, background, psf, PIXEL_SCALE, region_px, **args)
