"""read_sdss_field on the committed cut-outs (default tier) and on the full shared field (slow)."""

import numpy as np
import pytest
from astropy.io import fits

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.sdss import SDSS_BANDS, read_fpm_mask, read_sdss_field
from tests.unit.surveys.conftest import (
    CAMCOL,
    CUTOUT_STAR,
    FIELD,
    RUN,
    SDSS_CUTOUTS,
    centroid,
    edit_fits,
    field_file,
)

#: sky of run 94 / camcol 1 / field 12 in counts per pixel: psField HDU 6 ``sky`` (equal to
#: photoField SKY * PIXSCALE**2 / NMGYPERCOUNT)
PSFIELD_SKY_COUNTS = {"u": 39.22, "g": 105.16, "r": 184.31, "i": 275.0, "z": 181.78}
PHOTOFIELD_GAIN = {"u": 1.62, "g": 3.32, "r": 4.71, "i": 5.165, "z": 4.745}


def test_shapes_units_and_metadata(cutout_field):
    assert cutout_field.bands == SDSS_BANDS
    assert cutout_field.images.shape == (5, 192, 192)
    assert cutout_field.background.shape == (5, 192, 192)
    assert cutout_field.images.dtype == np.float32
    for band, frame in cutout_field.frames.items():
        assert frame.gain == pytest.approx(PHOTOFIELD_GAIN[band], rel=1e-6)
        assert frame.nmgy_per_count.shape == (192,)
        assert frame.pixel_origin == (370, 1050)
        assert np.isfinite(frame.sky).all()
        assert 0 < frame.mask.mean() < 0.2
    assert "SdssField(run=94" in repr(cutout_field)


def test_sky_matches_the_psfield_and_photofield_sky(cutout_field):
    """The interpolated ALLSKY grid agrees with the pipeline's sky level within 1.5%."""
    for band, frame in cutout_field.frames.items():
        sky_counts = np.median(frame.sky) / frame.gain
        assert sky_counts == pytest.approx(PSFIELD_SKY_COUNTS[band], rel=0.015), band


def test_r_band_noise_matches_poisson_noise_of_the_sky(cutout_field):
    """r is not resampled: the robust scatter of electrons - sky is sqrt(sky + dark variance).

    Tolerance 10% (measured: 6% low on this cut-out, 4% high on the full frame). Resampled bands
    have less scatter (the cubic spline averages neighbours: 5..20% less).
    """
    frame = cutout_field.frames["r"]
    residual = (frame.electrons - frame.sky)[~frame.mask]
    scatter = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    dark_variance_counts2 = 1.8225  # photoField DARK_VARIANCE, r
    expected = np.sqrt(np.median(frame.sky) + dark_variance_counts2 * frame.gain**2)
    assert scatter == pytest.approx(expected, rel=0.10)
    assert abs(np.median(residual)) < 0.1 * expected


def test_electrons_round_trip_to_the_frame_nanomaggies():
    field = read_sdss_field(SDSS_CUTOUTS, RUN, CAMCOL, FIELD, bands=("r",))
    frame = field.frames["r"]
    path = field_file(SDSS_CUTOUTS, "frame-r-000094-1-0012.fits.bz2")
    with fits.open(path) as hdus:
        nmgy = hdus[0].data.astype(np.float64)
        header_nmgy_per_count = hdus[0].header["NMGY"]
    recovered = (frame.electrons - frame.sky) / frame.gain * frame.nmgy_per_count[np.newaxis, :]
    good = ~frame.mask
    np.testing.assert_allclose(recovered[good], nmgy[good], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        field.nmgy_per_electron("r")[0], frame.nmgy_per_count / frame.gain, rtol=1e-6
    )
    # MAGZERO uses the median column calibration; the header's NMGY is within 0.2%
    magzero_header = 22.5 - 2.5 * np.log10(header_nmgy_per_count / frame.gain)
    assert frame.magzero == pytest.approx(magzero_header, abs=0.005)
    assert frame.magzero == pytest.approx(29.99, abs=0.01)


def test_masked_pixels_are_nan(cutout_field):
    r_band = cutout_field.frames["r"]
    fpm = read_fpm_mask(field_file(SDSS_CUTOUTS, "fpM-000094-r1-0012.fit.gz"))
    np.testing.assert_array_equal(np.isnan(r_band.electrons), fpm)
    np.testing.assert_array_equal(r_band.mask, fpm)
    assert np.isnan(r_band.electrons[:, 1189 - 1050]).all()  # r bad column 1189
    # i has bad columns 1124..1125; i sits ~1.5 px left of r, so they land near r column 75
    i_band = cutout_field.frames["i"]
    i_fpm = read_fpm_mask(field_file(SDSS_CUTOUTS, "fpM-000094-i1-0012.fit.gz"))
    assert i_fpm[:, 1124 - 1050 : 1126 - 1050].all()
    rows, cols = np.nonzero(i_fpm)
    for row, col in zip(rows[::50], cols[::50], strict=True):
        # every reference pixel that lands within half a pixel of a masked i pixel is NaN
        ref_row, ref_col = _reference_pixel(cutout_field, "i", row, col)
        if 0 <= ref_row < 192 and 0 <= ref_col < 192:
            assert np.isnan(i_band.electrons[round(ref_row), round(ref_col)])
    assert np.isfinite(i_band.electrons).mean() > 0.8


def _reference_pixel(field, band, row, col):
    frame = field.frames[band]
    ra, dec = frame.wcs.wcs_pix2world(col, row, 0)
    ref_col, ref_row = field.wcs.wcs_world2pix(ra, dec, 0)
    return float(ref_row), float(ref_col)


@pytest.mark.parametrize("interp_order", [3, 1])
def test_bands_are_aligned_on_the_r_grid(interp_order):
    """The star lands where each band's WCS puts it (< 0.02 px) and near the r position.

    Through the SDSS WCS themselves, this star sits 0.06 / 0.08 px (g / z) and 0.16 / 0.2 px (i /
    u) off its r position: band-to-band astrometric and chromatic offsets of the pipeline, also
    seen with the frames' own HDU 3 transforms (median 0.05..0.12 px over 30 stars). Hence the
    0.1 px bound for g, z and 0.25 px for u, i.
    """
    field = read_sdss_field(SDSS_CUTOUTS, RUN, CAMCOL, FIELD, interp_order=interp_order)
    r_band = field.frames["r"]
    star = centroid(r_band.electrons - r_band.sky, r_band.mask, *CUTOUT_STAR)
    bound = {"u": 0.25, "g": 0.1, "r": 1e-3, "i": 0.25, "z": 0.1}
    for band, frame in field.frames.items():
        aligned = centroid(frame.electrons - frame.sky, frame.mask, *star)
        native = _native_centroid(field, band, star)
        assert np.hypot(aligned[0] - native[0], aligned[1] - native[1]) < 0.02, band
        assert np.hypot(aligned[0] - star[0], aligned[1] - star[1]) < bound[band], band


def _native_centroid(field, band, star):
    """Centroid in the band's own (unresampled) cut-out, carried to the r grid by the WCS."""
    with fits.open(field_file(SDSS_CUTOUTS, f"frame-{band}-000094-1-0012.fits.bz2")) as hdus:
        image = hdus[0].data.astype(np.float64)
    mask = read_fpm_mask(field_file(SDSS_CUTOUTS, f"fpM-000094-{band}1-0012.fit.gz"))
    origin = field.frames[band].pixel_origin
    row, col = field.band_pixel(band, *star)
    native = centroid(image, mask, row - origin[0], col - origin[1])
    return _reference_pixel(field, band, *native)


def test_bands_subset_and_reference_band():
    field = read_sdss_field(SDSS_CUTOUTS, RUN, CAMCOL, FIELD, bands=("i", "g"), align_to="g")
    assert field.bands == ("i", "g")
    assert field.reference_band == "g"
    assert field.images.shape == (2, 192, 192)
    assert field.psf_fwhm_arcsec().shape == (2,)


def test_missing_band_file_is_named(cutout_copy):
    field_file(cutout_copy, "frame-g-000094-1-0012.fits.bz2").unlink()
    with pytest.raises(BlissIOError, match="frame-g-000094-1-0012.fits.bz2"):
        read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD)


def test_plain_fits_frames_are_read(cutout_copy):
    import bz2

    path = field_file(cutout_copy, "frame-r-000094-1-0012.fits.bz2")
    path.with_suffix("").write_bytes(bz2.decompress(path.read_bytes()))
    path.unlink()
    field = read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD, bands=("r",))
    assert field.frames["r"].path.name == "frame-r-000094-1-0012.fits"


def test_truncated_frame_is_named(cutout_copy):
    path = field_file(cutout_copy, "frame-z-000094-1-0012.fits.bz2")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BlissIOError, match="frame-z-000094-1-0012.fits.bz2"):
        read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD)


@pytest.mark.parametrize(
    ("name", "keyword", "value", "message"),
    [
        ("psField-000094-1-0012.fit", "FIELD", 13, "psField .* FIELD=13"),
        ("photoField-000094-1.fits", "RUN", 95, "photoField .* RUN=95"),
        ("photoField-000094-1.fits", "CAMCOL", "2", "photoField .* CAMCOL='2'"),
        ("fpM-000094-u1-0012.fit.gz", "FIELD", 11, "fpM .* FIELD=11"),
        ("frame-i-000094-1-0012.fits.bz2", "RUN", 2583, "frame .* RUN=2583"),
    ],
)
def test_files_of_another_run_camcol_or_field_are_refused(
    cutout_copy, name, keyword, value, message
):
    path = field_file(cutout_copy, name)

    def _edit(hdus):
        hdus[0].header[keyword] = value

    edit_fits(path, _edit)
    with pytest.raises(BlissIOError, match=message):
        read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD)


def test_frame_of_another_field_is_refused(cutout_copy):
    path = field_file(cutout_copy, "frame-g-000094-1-0012.fits.bz2")

    def _edit(hdus):
        hdus[3].data["FIELD"][0] = 13

    edit_fits(path, _edit)
    with pytest.raises(BlissIOError, match="holds field 13"):
        read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD)


def test_photofield_without_the_field_row(cutout_copy):
    path = field_file(cutout_copy, "photoField-000094-1.fits")

    def _edit(hdus):
        hdus[1].data["FIELD"][:] = 40

    edit_fits(path, _edit)
    with pytest.raises(BlissIOError, match="0 rows for run 94, camcol 1, field 12"):
        read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD)


def test_band_that_does_not_overlap_is_refused(cutout_copy):
    path = field_file(cutout_copy, "frame-u-000094-1-0012.fits.bz2")

    def _edit(hdus):
        hdus[0].header["CRVAL2"] += 0.5  # degrees: far beyond the 76 arcsec cut-out

    edit_fits(path, _edit)
    with pytest.raises(BlissIOError, match="does not overlap"):
        read_sdss_field(cutout_copy, RUN, CAMCOL, FIELD)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": ("g", "y")}, "expected distinct names"),
        ({"bands": ("g", "g", "r")}, "expected distinct names"),
        ({"bands": ("g", "i"), "align_to": "r"}, "align_to='r' is not one of"),
        ({"interp_order": 2}, "interp_order=2"),
        ({"mask_planes": ("INTERP", "BADPIX")}, r"mask planes \['BADPIX'\]"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(BlissValueError, match=message):
        read_sdss_field(SDSS_CUTOUTS, RUN, CAMCOL, FIELD, **kwargs)


@pytest.mark.parametrize(
    ("run", "camcol", "field"), [(0, 1, 12), (94, 7, 12), (94, 1, -1), (94.0, 1, 12)]
)
def test_bad_ids(run, camcol, field):
    with pytest.raises(BlissValueError, match="expected an integer"):
        read_sdss_field(SDSS_CUTOUTS, run, camcol, field)


@pytest.mark.slow
def test_full_field(shared_sdss):
    """Full 1489 x 2048 field (~15 s): sky within 1%, r noise within 5%, stars aligned."""
    import sep

    field = read_sdss_field(shared_sdss, RUN, CAMCOL, FIELD)
    assert field.images.shape == (5, 1489, 2048)
    for band, frame in field.frames.items():
        assert np.median(frame.sky) / frame.gain == pytest.approx(
            PSFIELD_SKY_COUNTS[band], rel=0.01
        )
        assert frame.mask.mean() < 0.06
    r_band = field.frames["r"]
    residual = (r_band.electrons - r_band.sky)[~r_band.mask]
    scatter = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    assert scatter == pytest.approx(np.sqrt(np.median(r_band.sky) + 1.8225 * 4.71**2), rel=0.05)
    with fits.open(shared_sdss / "94/1/12/photoObj-000094-1-0012.fits") as hdus:
        objects = hdus[1].data
    flux_r = objects["PSFFLUX"][:, 2]
    stars = objects[
        (objects["OBJC_TYPE"] == 6) & (flux_r > 100) & (flux_r < 3000) & (objects["NCHILD"] == 0)
    ]
    rows, cols = (
        stars["ROWC"][:, 2] - 0.5,
        stars["COLC"][:, 2] - 0.5,
    )  # SDSS pixel centres are at .5
    inside = (rows > 20) & (rows < 1469) & (cols > 20) & (cols < 2028)
    rows, cols = rows[inside], cols[inside]
    assert len(rows) > 20
    positions = {}
    for band, frame in field.frames.items():
        data = np.ascontiguousarray(np.nan_to_num(frame.electrons - frame.sky), dtype=np.float64)
        x, y, flags = sep.winpos(data, cols, rows, np.full(len(rows), 2.0), mask=frame.mask)
        positions[band] = (y, x, flags == 0)
    ref_rows, ref_cols, ref_ok = positions["r"]
    for band in "ugiz":
        band_rows, band_cols, ok = positions[band]
        ok &= ref_ok
        offset = np.hypot(band_rows[ok] - ref_rows[ok], band_cols[ok] - ref_cols[ok])
        # per band, the median star offset is 0.05..0.15 px (SDSS astrometry, see above)
        assert np.median(offset) < 0.2, band


def test_psf_fwhm_map_follows_the_psfield(cutout_field):
    fwhm_map = cutout_field.psf_fwhm_map(grid=2)
    assert fwhm_map.shape == (5, 192, 192) and fwhm_map.dtype == np.float32
    # at a lattice place (the centre of the top-left of 2 x 2 cells) the map is the fit there
    r_psf = cutout_field.frames["r"].psf
    at_place = r_psf.fwhm_arcsec(47.5 + 370, 47.5 + 1050, method="moffat")
    assert fwhm_map[2, 47, 47] == pytest.approx(at_place, rel=0.01)
    # a 192-px cut-out sees a smooth polynomial PSF: the map varies by well under 5 %
    assert np.ptp(fwhm_map[2]) < 0.05 * fwhm_map[2].mean()
    centre = cutout_field.psf_fwhm_arcsec()
    assert np.allclose(fwhm_map[:, 95:97, 95:97].mean(axis=(1, 2)), centre, rtol=0.01)


def test_the_sky_grid_is_interpolated_as_map_coordinates_would():
    """The separable sky equals bilinear interpolation of the grid at every pixel (positions
    beyond the grid take its edge values, as ``mode="nearest"``)."""
    from scipy import ndimage

    from bliss.surveys.sdss.frames import _sky_counts

    rng = np.random.default_rng(0)
    grid = rng.uniform(100, 200, (6, 9))
    grid_rows = np.linspace(-1.5, 6.7, 23)
    grid_cols = np.linspace(-0.3, 9.4, 31)
    rows, cols = np.meshgrid(grid_rows, grid_cols, indexing="ij")
    expected = ndimage.map_coordinates(grid, [rows, cols], order=1, mode="nearest")
    assert np.allclose(_sky_counts(grid, grid_rows, grid_cols), expected, rtol=1e-12)
    flat = _sky_counts(grid[:1], np.zeros(4), grid_cols)  # a grid one row high
    assert np.allclose(
        flat,
        ndimage.map_coordinates(
            grid[:1], np.meshgrid(np.zeros(4), grid_cols, indexing="ij"), order=1, mode="nearest"
        ),
    )


def test_saturated_pixels_are_read_masked_and_carried_to_the_reference_grid():
    """The M2 cut-out holds saturated stars in r and i (fpM ``SATUR``)."""
    from bliss.surveys.sdss.masks import read_fpm_planes

    field = read_sdss_field(SDSS_CUTOUTS, 2583, 2, 136)
    saturated = field.saturated
    assert saturated.shape == field.images.shape and saturated[field.bands.index("r")].any()
    assert np.isnan(field.images[saturated]).all()  # SATUR is a default mask plane
    fpm = SDSS_CUTOUTS / "2583" / "2" / "136" / "fpM-002583-r2-0136.fit.gz"
    planes = read_fpm_planes(fpm, ("interp", "SATUR", "CR"))
    assert sorted(planes) == ["CR", "INTERP", "SATUR"]
    union = planes["INTERP"] | planes["SATUR"] | planes["CR"]
    assert np.array_equal(union, read_fpm_mask(fpm))
    assert np.array_equal(planes["SATUR"], saturated[field.bands.index("r")])  # r: the grid
