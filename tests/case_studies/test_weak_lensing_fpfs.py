"""The weak_lensing case study's FPFS baseline recovers a known constant shear.

The scene: 36 exponential galaxies on a jittered 6 x 6 grid (8.5 arcsec apart, so they do not
blend), lensed by a constant shear, and its partner in which every intrinsic ellipticity is
rotated by 90 degrees. Summing the pair cancels the intrinsic shape noise to first order, so a
handful of galaxies pins the shear down.

Every galaxy is centred on a pixel centre: a 90-degree rotation about a pixel centre is an exact
symmetry of the pixel grid (and of the round PSF), so the partner's pixels are the rotated
pixels of the original. AnaCal measures at the detected peak pixel; with sub-pixel offsets the
rotated galaxy would sit at a different offset from that pixel, and the pair would no longer
cancel (we measured g1 off by 10-20% with 36 pairs that way): shape noise, not estimator bias.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from bliss.errors import BlissShapeError, BlissValueError

pytest.importorskip("anacal")
galsim = pytest.importorskip("galsim")

sys.path.insert(0, str(Path(__file__).parents[2] / "case_studies" / "weak_lensing"))
from fpfs_baseline import fpfs_shear  # noqa: E402

PIXEL_SCALE = 0.2  # arcsec
SIDE_PX = 256
GRID = 6  # galaxies per side
SHEAR_G1 = 0.02
FLUX = 1.0e4  # electrons
NOISE_SIGMA = 0.5  # electrons per pixel


def moffat_psf_image() -> np.ndarray:
    """The pixel-convolved Moffat PSF (FWHM 0.7 arcsec), 25 x 25 px, sum 1."""
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    image = psf.drawImage(nx=25, ny=25, scale=PIXEL_SCALE).array.astype(np.float64)
    return image / image.sum()


def lensed_scene(rotate_intrinsic: bool, seed: int) -> np.ndarray:
    """The noisy sheared scene; ``seed`` fixes the galaxies, the partner shares them."""
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    scene = galsim.ImageF(SIDE_PX, SIDE_PX, scale=PIXEL_SCALE)
    spacing = SIDE_PX / GRID
    for row in range(GRID):
        for col in range(GRID):
            hlr = rng.uniform(0.3, 0.6)
            shape = galsim.Shear(
                g=rng.uniform(0.0, 0.5), beta=rng.uniform(0, np.pi) * galsim.radians
            )
            # integer jitter keeps the centre on a pixel centre (GalSim: integer coordinates)
            x = int((col + 0.5) * spacing) + int(rng.integers(-3, 4)) + 1
            y = int((row + 0.5) * spacing) + int(rng.integers(-3, 4)) + 1
            galaxy = galsim.Exponential(half_light_radius=hlr, flux=FLUX).shear(shape)
            if rotate_intrinsic:
                galaxy = galaxy.rotate(90 * galsim.degrees)
            galaxy = galsim.Convolve(galaxy.shear(g1=SHEAR_G1, g2=0.0), psf)
            stamp = galaxy.drawImage(nx=64, ny=64, scale=PIXEL_SCALE, center=(x, y))
            overlap = stamp.bounds & scene.bounds
            scene[overlap] += stamp[overlap]
    noise_rng = np.random.default_rng([seed, int(rotate_intrinsic)])
    return scene.array.astype(np.float64) + noise_rng.normal(0.0, NOISE_SIGMA, scene.array.shape)


@pytest.fixture(scope="module")
def pair_sums() -> list[dict]:
    """``fpfs_shear`` on the scene and its rotated partner."""
    psf_image = moffat_psf_image()
    return [
        fpfs_shear(
            lensed_scene(rotated, seed=7),
            psf_image,
            NOISE_SIGMA**2,
            PIXEL_SCALE,
            rng=np.random.default_rng(100 + rotated),
        )
        for rotated in (False, True)
    ]


def test_the_pair_recovers_the_shear(pair_sums: list[dict]) -> None:
    """|m| < 0.05 and |g2| < 0.002, with m = g1 / 0.02 - 1.

    Over 20 seeds (galaxies and noise) this scene gives m = -0.1% with a scatter of 1.1%
    (extremes -2.3%, +2.7%) and g2 = 0.0001 +- 0.0004 (extremes -0.0004, +0.0008), so the
    bounds sit 4-5 sigma from the expected values; the scatter is the pixel noise, doubled by
    the noise-bias correction. Ignoring the FPFS response (dividing by the summed weights)
    would give m = -0.44.
    """
    e1 = sum(sums["e1"] for sums in pair_sums)
    r1 = sum(sums["r1"] for sums in pair_sums)
    e2 = sum(sums["e2"] for sums in pair_sums)
    r2 = sum(sums["r2"] for sums in pair_sums)
    g1, g2 = e1 / r1, e2 / r2
    assert abs(g1 / SHEAR_G1 - 1) < 0.05, g1
    assert abs(g2) < 0.002, g2


def test_every_galaxy_is_detected(pair_sums: list[dict]) -> None:
    for sums in pair_sums:
        assert sums["n"] >= GRID**2  # noise peaks are kept too, with weights near 0
        assert 0.4 * GRID**2 < sums["r1"] < 0.7 * GRID**2  # FPFS responses are ~0.55 a galaxy


def test_no_source_gives_zero_sums() -> None:
    image = np.random.default_rng(0).normal(0.0, NOISE_SIGMA, (64, 64))
    sums = fpfs_shear(
        image, moffat_psf_image(), NOISE_SIGMA**2, PIXEL_SCALE, rng=np.random.default_rng(1)
    )
    assert set(sums) == {"e1", "e2", "r1", "r2", "n"}
    assert abs(sums["e1"]) < 0.1 and abs(sums["r1"]) < 0.1  # at most a few low-weight peaks


@pytest.mark.parametrize(
    ("image", "psf", "error", "match"),
    [
        (np.zeros((2, 32, 32)), np.ones((5, 5)) / 25, BlissShapeError, "expected one band"),
        (np.zeros(32), np.ones((5, 5)) / 25, BlissShapeError, "expected one band"),
        (np.zeros((32, 32)), np.ones((4, 4)) / 16, BlissValueError, "expected odd sides"),
        (np.zeros((32, 32)), np.ones((5, 6)) / 30, BlissValueError, "expected odd sides"),
        (np.zeros((32, 32)), np.ones((5, 5)), BlissValueError, "sums to 25"),
        (np.zeros((32, 32)), np.ones((2, 5, 5)) / 50, BlissShapeError, "psf_image has shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(image, psf, error, match) -> None:
    with pytest.raises(error, match=match):
        fpfs_shear(image, psf, 1.0, PIXEL_SCALE, rng=np.random.default_rng(0))


def test_bad_options_raise_clear_errors() -> None:
    image, psf = np.zeros((32, 32)), moffat_psf_image()
    with pytest.raises(BlissValueError, match="noise_variance=0"):
        fpfs_shear(image, psf, 0.0, PIXEL_SCALE, rng=np.random.default_rng(0))
    with pytest.raises(BlissValueError, match="rng is None"):
        fpfs_shear(image, psf, 1.0, PIXEL_SCALE)
    with pytest.raises(BlissValueError, match=r"unknown fpfs_shear option\(s\) \['snr_min'\]"):
        fpfs_shear(image, psf, 1.0, PIXEL_SCALE, rng=np.random.default_rng(0), snr_min=5)
    with pytest.raises(BlissValueError, match="stamp_size=63"):
        fpfs_shear(image, psf, 1.0, PIXEL_SCALE, rng=np.random.default_rng(0), stamp_size=63)


def test_missing_anacal_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anacal", None)  # makes `import anacal` fail
    with pytest.raises(ImportError, match=r'pip install "bliss-toolkit\[weak_lensing\]"'):
        fpfs_shear(
            np.zeros((32, 32)), moffat_psf_image(), 1.0, PIXEL_SCALE, rng=np.random.default_rng(0)
        )
