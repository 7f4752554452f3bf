"""SdssPsf: the psField KL-basis PSF against the cut-out star and the full field's stars."""

import numpy as np
import pytest
from astropy.io import fits

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.sdss import SDSS_BANDS, SdssPsf, read_sdss_field
from tests.unit.surveys.conftest import (
    CAMCOL,
    CUTOUT_STAR,
    FIELD,
    RUN,
    SDSS_CUTOUTS,
    centroid,
    edit_fits,
    field_file,
    ncc,
    psf_stamp,
    stamp,
)

PSFIELD = field_file(SDSS_CUTOUTS, "psField-000094-1-0012.fit")


@pytest.fixture(scope="module")
def psfield_summary() -> fits.FITS_rec:
    with fits.open(PSFIELD) as hdus:
        return hdus[6].data[0]


@pytest.mark.parametrize("band", SDSS_BANDS)
def test_image_is_normalised_and_centred(band):
    psf = SdssPsf.from_psfield(PSFIELD, band, run=RUN, camcol=CAMCOL, field=FIELD)
    image = psf.image(744.0, 1024.0)
    assert image.shape == psf.stamp_shape == (51, 51)
    assert image.sum() == pytest.approx(1.0)
    assert np.unravel_index(image.argmax(), image.shape) == (25, 25)
    # windowed centroid (the KL PSFs are slightly lopsided: plain moments move up to 0.14 px)
    row, col = centroid(image, np.zeros(image.shape, dtype=bool), 25.0, 25.0)
    assert np.hypot(row - 25, col - 25) < 0.1
    assert psf.weights(744.0, 1024.0).shape == (4,)


@pytest.mark.parametrize("band", SDSS_BANDS)
def test_fwhm_matches_the_psfield_psf_width(band, psfield_summary):
    """``effective`` (noise-equivalent area) FWHM is the psField's psf_width within 2%."""
    psf = SdssPsf.from_psfield(PSFIELD, band)
    width = psfield_summary["psf_width"][SDSS_BANDS.index(band)]
    assert psf.fwhm_arcsec(744.0, 1024.0) == pytest.approx(width, rel=0.02)
    half_max = psf.fwhm_arcsec(744.0, 1024.0, method="half_max")
    assert 0.8 * width < half_max < width
    with pytest.raises(BlissValueError, match="method='moments'"):
        psf.fwhm_arcsec(744.0, 1024.0, method="moments")


def test_psf_varies_across_the_frame():
    psf = SdssPsf.from_psfield(PSFIELD, "r")
    corner, centre = psf.image(0.0, 0.0), psf.image(744.0, 1024.0)
    assert 1e-4 < np.abs(corner - centre).max() < 0.2 * centre.max()


def test_psf_matches_the_bright_star():
    """PSF at the star's full-frame position vs the star in the r cut-out: NCC > 0.98 (0.9997)."""
    field = read_sdss_field(SDSS_CUTOUTS, RUN, CAMCOL, FIELD, bands=("r",))
    frame = field.frames["r"]
    residual = frame.electrons - frame.sky
    row, col = centroid(residual, frame.mask, *CUTOUT_STAR)
    star = stamp(residual, row, col)
    assert np.isfinite(star).all()
    full_frame = (row + frame.pixel_origin[0], col + frame.pixel_origin[1])
    model = psf_stamp(frame.psf.image(*full_frame), row, col)
    np.testing.assert_allclose(field.psf_image("r", row, col), frame.psf.image(*full_frame))
    assert ncc(star, model) > 0.98
    # the star is much less alike to a PSF twice as wide, so the check has teeth
    wide = psf_stamp(_widened(frame.psf.image(*full_frame)), row, col)
    assert ncc(star, wide) < 0.95


def _widened(image):
    from scipy import ndimage

    return ndimage.zoom(image, 2.0, order=1)[25:76, 25:76]


def test_psf_matches_the_star_in_every_aligned_band(cutout_field):
    r_band = cutout_field.frames["r"]
    star_rc = centroid(r_band.electrons - r_band.sky, r_band.mask, *CUTOUT_STAR)
    for band, frame in cutout_field.frames.items():
        residual = frame.electrons - frame.sky
        row, col = centroid(residual, frame.mask, *star_rc)
        model = psf_stamp(cutout_field.psf_image(band, row, col), row, col)
        assert ncc(stamp(residual, row, col), model) > 0.98, band


def test_wrong_field_band_and_damaged_file(tmp_path):
    with pytest.raises(BlissIOError, match="has FIELD=12 .* expected .*FIELD=13"):
        SdssPsf.from_psfield(PSFIELD, "r", run=RUN, camcol=CAMCOL, field=13)
    with pytest.raises(BlissIOError, match="no PSF for band 'y'"):
        SdssPsf.from_psfield(PSFIELD, "y")
    truncated = tmp_path / PSFIELD.name
    truncated.write_bytes(PSFIELD.read_bytes()[:100_000])
    with pytest.raises(BlissIOError, match=truncated.name):
        SdssPsf.from_psfield(truncated, "z")
    with pytest.raises(BlissIOError, match="does not exist"):
        SdssPsf.from_psfield(tmp_path / "psField-missing.fit", "r")


def test_psfield_with_other_run_is_refused(tmp_path):
    copy = tmp_path / PSFIELD.name
    copy.write_bytes(PSFIELD.read_bytes())

    def _edit(hdus):
        hdus[0].header["RUN"] = 2583

    edit_fits(copy, _edit)
    with pytest.raises(BlissIOError, match="RUN=2583"):
        SdssPsf.from_psfield(copy, "r", run=RUN)


def test_constructor_checks_shapes():
    with pytest.raises(BlissValueError, match="expected `k h w`"):
        SdssPsf("r", np.ones((5, 5)), np.ones((1, 1, 1)))
    with pytest.raises(BlissValueError, match="one coefficient array per eigen-image"):
        SdssPsf("r", np.ones((2, 5, 5)), np.ones((1, 1, 1)))
    with pytest.raises(BlissValueError, match="pixel_scale_arcsec"):
        SdssPsf("r", np.ones((1, 5, 5)), np.ones((1, 1, 1)), pixel_scale_arcsec=0.0)
    with pytest.raises(BlissValueError, match="sums to"):
        SdssPsf("r", np.ones((1, 5, 5)), np.zeros((1, 1, 1))).image(0.0, 0.0)


@pytest.mark.slow
def test_psf_matches_isolated_stars_of_the_full_field(shared_sdss):
    """r band, every isolated photoObj star with 100..3000 nmgy: NCC > 0.98."""
    field = read_sdss_field(shared_sdss, RUN, CAMCOL, FIELD, bands=("r",))
    frame = field.frames["r"]
    residual = frame.electrons - frame.sky
    with fits.open(shared_sdss / "94/1/12/photoObj-000094-1-0012.fits") as hdus:
        objects = hdus[1].data
    flux_r = objects["PSFFLUX"][:, 2]
    stars = objects[
        (objects["OBJC_TYPE"] == 6) & (flux_r > 100) & (flux_r < 3000) & (objects["NCHILD"] == 0)
    ]
    all_rows, all_cols = objects["ROWC"][:, 2], objects["COLC"][:, 2]
    scores = []
    for star in stars:
        row, col = star["ROWC"][2] - 0.5, star["COLC"][2] - 0.5
        distance = np.hypot(all_rows - 0.5 - row, all_cols - 0.5 - col)
        # isolated: nothing but itself (and its duplicates from the overlapping fields) in the stamp
        if not (20 < row < 1469 and 20 < col < 2028) or ((distance > 1) & (distance < 20)).any():
            continue
        cut = stamp(residual, row, col)
        if not np.isfinite(cut).all():
            continue
        row, col = centroid(residual, frame.mask, row, col)
        scores.append(
            ncc(stamp(residual, row, col), psf_stamp(frame.psf.image(row, col), row, col))
        )
    assert len(scores) > 15
    assert min(scores) > 0.98


@pytest.mark.slow
@pytest.mark.parametrize("band", ["r", "i"])
def test_psf_matches_the_rendered_psf_images_of_run_2583(shared_sdss, band):
    """The shared 25 x 25 PSF images rendered from this psField are reproduced to 1e-7.

    Their position is not recorded; fitting it gives (row, col) = (600.5, 500.5) for r to
    4e-9 (i does not vary across the field). This checks the KL reconstruction: eigen-image
    layout, the 1/1000 position scaling and the coefficient block.
    """
    folder = shared_sdss / "2583/2/136"
    with fits.open(folder / f"sdss-002583-2-0136-psf-{band}.fits") as hdus:
        rendered = hdus[0].data.astype(np.float64)
    psf = SdssPsf.from_psfield(
        folder / "psField-002583-2-0136.fit", band, run=2583, camcol=2, field=136
    )
    ours = psf.image(600.5, 500.5)[13:38, 13:38]
    np.testing.assert_allclose(ours / ours.sum(), rendered / rendered.sum(), atol=1e-7)
