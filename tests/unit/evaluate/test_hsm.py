"""REGAUSS shapes for baselines: a known shear, a masked neighbour, stamps off the image."""

import galsim
import numpy as np
import pytest

from bliss.evaluate.hsm import distortion_to_shear, regauss_shapes

SCALE = 0.2
SKY = 1000.0


def _scene(neighbour: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sheared exponential at x = 30, y = 32 (S/N ~ 500), maybe a bright round neighbour 9 px away."""
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    image = galsim.ImageD(64, 64, scale=SCALE, xmin=0, ymin=0)
    galaxy = galsim.Exponential(half_light_radius=0.6, flux=2e5).shear(g1=0.2, g2=-0.1)
    galsim.Convolve(galaxy, psf).drawImage(image=image, center=galsim.PositionD(30, 32))
    segmentation = np.zeros((64, 64), np.int64)
    segmentation[np.hypot(*np.mgrid[:64, :64] - np.array([32, 30])[:, None, None]) < 7] = 1
    if neighbour:
        other = galsim.Convolve(galsim.Exponential(half_light_radius=0.5, flux=4e5), psf)
        other.drawImage(image=image, center=galsim.PositionD(39, 32), add_to_image=True)
        segmentation[np.hypot(*np.mgrid[:64, :64] - np.array([32, 39])[:, None, None]) < 4] = 2
    rng = np.random.default_rng(0)
    data = rng.poisson(image.array + SKY) - SKY
    return data, segmentation, psf.drawImage(nx=25, ny=25, scale=SCALE).array


def test_a_sheared_galaxy_is_measured_to_its_shear():
    data, _, psf = _scene(neighbour=False)
    distortion, error = regauss_shapes(data, SKY, psf, SCALE, np.array([[30.0, 32.0]]))
    shear = distortion_to_shear(distortion)
    np.testing.assert_allclose(shear[0], [0.2, -0.1], atol=0.02)
    assert 0 < error[0] < 0.05


def test_masking_the_neighbour_removes_most_of_its_pull():
    data, segmentation, psf = _scene(neighbour=True)
    centre = np.array([[30.0, 32.0]])
    masked, _ = regauss_shapes(
        data, SKY, psf, SCALE, centre, segmentation=segmentation, labels=np.array([1])
    )
    unmasked, _ = regauss_shapes(data, SKY, psf, SCALE, centre)
    truth = np.array([0.2, -0.1])
    masked_error = np.hypot(*(distortion_to_shear(masked)[0] - truth))
    unmasked_error = np.hypot(*(distortion_to_shear(unmasked)[0] - truth))
    # the neighbour's wings inside the galaxy's own segment still pull (0.05 here), its core
    # would pull three times as much (0.14)
    assert masked_error < 0.5 * unmasked_error
    assert masked_error < 0.08


def test_stamps_leaving_the_image_are_not_measured():
    data, _, psf = _scene(neighbour=False)
    shapes, errors = regauss_shapes(data, SKY, psf, SCALE, np.array([[3.0, 32.0], [30.0, 32.0]]))
    assert np.isnan(shapes[0]).all() and np.isnan(errors[0])
    assert np.isfinite(shapes[1]).all()


def test_distortions_become_reduced_shears():
    q = np.array([0.5, 0.8, 1.0])
    distortion = np.stack([(1 - q**2) / (1 + q**2), np.zeros(3)], -1)
    expected = np.stack([(1 - q) / (1 + q), np.zeros(3)], -1)
    np.testing.assert_allclose(distortion_to_shear(distortion), expected)
    # the direction is kept
    rotated = distortion_to_shear(np.array([[0.0, 0.6]]))
    assert rotated[0, 0] == 0 and rotated[0, 1] == pytest.approx(1 / 3)
