import pytest
import torch

from bliss.encoder.normalizers import ImageNormalizer
from bliss.errors import BlissConfigError, BlissValueError


def _batch(
    b: int = 2, c: int = 3, size: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    background = torch.full((b, c), 400.0)
    images = background[..., None, None] + 20.0 * torch.randn(b, c, size, size)
    return images, background, torch.full((b, c), 1.7)


def test_channels_in_order_and_their_values():
    images, background, fwhm = _batch()
    images[0, 1, 2, 3] = float("nan")
    out = ImageNormalizer(3, fwhm_center=1.4, fwhm_spread=0.3, sky_center=500.0)(
        images, background, fwhm
    )
    assert out.shape == (2, 3 * 4, 8, 8)
    signal = (images - 400.0) / 20.0
    torch.testing.assert_close(out[:, :3], torch.nan_to_num(signal, nan=0.0).clamp(-100, 100))
    torch.testing.assert_close(out[:, 3:6], torch.asinh(torch.nan_to_num(signal, nan=0.0) / 3))
    torch.testing.assert_close(out[:, 6:9], torch.full((2, 3, 8, 8), 1.0))  # (1.7 - 1.4) / 0.3
    torch.testing.assert_close(out[:, 9:], torch.full((2, 3, 8, 8), torch.log(torch.tensor(0.8))))


def test_psf_shape_maps_follow_the_fwhm_and_sky_maps():
    images, background, fwhm = _batch()
    shape = torch.tensor([[0.05, -0.02, 2.24]]).expand(2, 3, 3)
    normalizer = ImageNormalizer(3, psf_shape=True, rho4_center=2.14, shape_spread=0.1)
    assert normalizer.n_channels == 3 * 7
    out = normalizer(images, background, fwhm, shape)
    assert out.shape == (2, 21, 8, 8)
    # per band: e1 / 0.1, e2 / 0.1, (rho4 - 2.14) / 0.1
    expected = torch.tensor([0.5, -0.2, 1.0]).repeat(3)
    torch.testing.assert_close(out[:, 12:, 4, 4], expected.expand(2, 9))
    # the other channels are those of a normaliser without the shape
    plain = ImageNormalizer(3)(images, background, fwhm)
    torch.testing.assert_close(out[:, :12], plain)


def test_a_shape_reading_normaliser_refuses_a_batch_without_the_shape():
    images, background, fwhm = _batch()
    with pytest.raises(BlissValueError, match="psf_shape"):
        ImageNormalizer(3, psf_shape=True)(images, background, fwhm)
    with pytest.raises(BlissConfigError, match="shape_spread"):
        ImageNormalizer(3, psf_shape=True, shape_spread=0.0)


def test_pixels_at_or_above_a_bands_saturation_level_are_missing():
    images, background, fwhm = _batch()
    images[0, 1, 4, 4] = 5000.0  # at band 1's level: saturated
    images[0, 1, 4, 5] = 4999.0  # just below it: kept
    images[1, 2, 0, 0] = 1e6  # band 2 never saturates
    saturating = ImageNormalizer(3, saturation_electrons=[None, 5000.0, None])
    out = saturating(images, background, fwhm)
    plain = ImageNormalizer(3)(images, background, fwhm)
    # the saturated pixel reads as a missing one in both image channels, as a NaN would
    assert out[0, 1, 4, 4] == 0.0 and out[0, 4, 4, 4] == 0.0
    missing = images.clone()
    missing[0, 1, 4, 4] = float("nan")
    torch.testing.assert_close(out, ImageNormalizer(3)(missing, background, fwhm))
    assert plain[0, 1, 4, 4] > 200.0 / 20.0  # without a level it is the brightest pixel
    assert out[0, 1, 4, 5] == plain[0, 1, 4, 5] and out[1, 2, 0, 0] == plain[1, 2, 0, 0]


def test_a_saturation_level_per_band_or_none():
    with pytest.raises(BlissConfigError, match="saturation_electrons"):
        ImageNormalizer(3, saturation_electrons=[1e5, 1e5])
    with pytest.raises(BlissConfigError, match="saturation_electrons"):
        ImageNormalizer(3, saturation_electrons=[1e5, 0.0, None])
