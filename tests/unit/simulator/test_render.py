import galsim
import numpy as np
import pytest

from bliss.errors import BlissShapeError, BlissValueError, BlissWarning
from bliss.simulator.render import GalsimRenderer, galaxy_profile, image_psf, moffat_psf

SCALE = 0.396  # arcsec / px
SHAPE = (48, 48)
# disk_frac, beta_rad, disk_q, disk_hlr_arcsec, bulge_q, bulge_hlr_arcsec
SMALL_GALAXY = (0.7, 0.4, 0.6, 0.5, 0.8, 0.3)


@pytest.fixture(scope="module")
def renderer():
    return GalsimRenderer()


@pytest.fixture(scope="module")
def psf():
    return moffat_psf(1.3)


def render(renderer, plocs, flux, psfs, is_galaxy=None, params=None, shape=SHAPE, **kwargs):
    plocs = np.atleast_2d(np.asarray(plocs, dtype=float))
    n = len(plocs)
    flux = np.asarray(flux, dtype=float).reshape(n, len(psfs))
    is_galaxy = np.zeros(n, bool) if is_galaxy is None else np.asarray(is_galaxy)
    params = np.zeros((n, 6)) if params is None else np.atleast_2d(params)
    return renderer.render(plocs, flux, is_galaxy, params, psfs, shape, SCALE, **kwargs)


def centroid(image):
    """Flux-weighted mean of pixel centres (index + 0.5), (row, col)."""
    rows, cols = np.indices(image.shape) + 0.5
    total = image.sum()
    return np.array([(rows * image).sum() / total, (cols * image).sum() / total])


def second_moments(image):
    """(var_row, var_col, cov_row_col) of a single-band image."""
    rows, cols = np.indices(image.shape) + 0.5
    total = image.sum()
    row_c, col_c = centroid(image)
    var_row = ((rows - row_c) ** 2 * image).sum() / total
    var_col = ((cols - col_c) ** 2 * image).sum() / total
    cov = ((rows - row_c) * (cols - col_c) * image).sum() / total
    return var_row, var_col, cov


def galsim_reference(profile, ploc, flux, shape=SHAPE):
    """The same source drawn directly by GalSim (pixel (i, j) centre at (i + .5, j + .5))."""
    image = galsim.ImageD(shape[1], shape[0], scale=SCALE, xmin=0, ymin=0)
    centre = image.true_center
    offset = (ploc[1] - 0.5 - centre.x, ploc[0] - 0.5 - centre.y)
    profile.withFlux(flux).drawImage(image=image, offset=offset, method="auto")
    return image.array


def test_output_shape_dtype_and_empty_catalog(renderer, psf):
    image = render(renderer, np.zeros((0, 2)), np.zeros((0, 3)), [psf] * 3)
    assert image.shape == (3, *SHAPE)
    assert image.dtype == np.float32
    assert not image.any()


def test_psf_is_normalised(renderer, psf):
    assert psf.flux == pytest.approx(1.0)
    image = render(renderer, [24.0, 24.0], [1.0], [psf])
    assert image.sum() == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("ploc", [(24.0, 24.0), (24.5, 24.5), (24.25, 23.8), (23.9, 24.37)])
def test_star_flux_and_centroid(renderer, psf, ploc):
    image = render(renderer, ploc, [1e4], [psf])[0]
    assert image.sum() == pytest.approx(1e4, rel=0.01)
    np.testing.assert_allclose(centroid(image), ploc, atol=0.05)


def test_star_matches_galsim(renderer, psf):
    ploc = (24.3, 23.7)
    ours = render(renderer, ploc, [1e4], [psf])[0]
    reference = galsim_reference(psf, ploc, 1e4)
    assert np.abs(ours - reference).max() < 2e-3 * reference.max()


@pytest.mark.parametrize(
    ("ploc", "fraction"),
    [((24.0, 0.0), 0.5), ((24.0, 48.0), 0.5), ((0.0, 0.0), 0.25), ((24.0, -40.0), 0.0)],
)
def test_star_on_edge_spills_light(renderer, psf, ploc, fraction):
    image = render(renderer, ploc, [1e4], [psf])
    assert image.sum() / 1e4 == pytest.approx(fraction, abs=0.03)


def test_per_band_fluxes_and_offsets(renderer, psf):
    offsets = np.array([[0.0, 0.0], [0.3, -0.2], [3.4, 1.0]])
    image = render(renderer, [20.2, 24.6], [[1e3, 2e3, 4e3]], [psf] * 3, band_offsets_px=offsets)
    np.testing.assert_allclose(image.sum(axis=(1, 2)), [1e3, 2e3, 4e3], rtol=0.01)
    for band in range(3):
        expected = np.array([20.2, 24.6]) + offsets[band]
        np.testing.assert_allclose(centroid(image[band]), expected, atol=0.05)


def test_galaxy_flux_and_known_answer(renderer, psf):
    ploc = (24.2, 23.6)
    image = render(renderer, ploc, [1e4], [psf], is_galaxy=[True], params=SMALL_GALAXY)[0]
    assert image.sum() == pytest.approx(1e4, rel=0.02)
    np.testing.assert_allclose(centroid(image), ploc, atol=0.05)
    convolved = galsim.Convolve(galaxy_profile(SMALL_GALAXY), psf)
    reference = galsim_reference(convolved, ploc, 1e4)
    assert np.abs(image - reference).max() < 2e-3 * reference.max()


@pytest.mark.parametrize("sersic_n", [1.5, 2.5])
def test_sersic_bulge_matches_galsim(psf, sersic_n):
    renderer = GalsimRenderer(bulge_sersic_n=sersic_n)
    params = (0.3, 0.9, 0.7, 0.6, 0.6, 0.5)  # bulge-dominated, so the index shows
    ploc = (23.7, 24.4)
    image = render(renderer, ploc, [1e4], [psf], is_galaxy=[True], params=params)[0]
    convolved = galsim.Convolve(galaxy_profile(params, bulge_sersic_n=sersic_n), psf)
    reference = galsim_reference(convolved, ploc, 1e4)
    assert np.abs(image - reference).max() < 2e-3 * reference.max()
    # and it is not the de Vaucouleurs bulge that models are trained on
    dev = galsim_reference(galsim.Convolve(galaxy_profile(params), psf), ploc, 1e4)
    assert np.abs(image - dev).max() > 1e-2 * reference.max()


def test_per_galaxy_sersic_profiles_match_galsim(renderer, psf):
    """Single Sersic galaxies (no disk) of their own index, as a COSMOS Sersic fit describes."""
    plocs = [[14.3, 13.6], [34.2, 35.7]]
    params = np.array([[0.0, 0.7, 0.6, 0.8, 0.6, 0.8], [0.0, 2.1, 0.8, 0.5, 0.8, 0.5]])
    image = render(
        renderer,
        plocs,
        [1e4, 2e4],
        [psf],
        is_galaxy=[True, True],
        params=params,
        bulge_sersic_n=np.array([1.5, 0.8]),
    )[0]
    reference = sum(
        galsim_reference(
            galsim.Convolve(
                galsim.Sersic(n, half_light_radius=p[5]).shear(q=p[4], beta=p[1] * galsim.radians),
                psf,
            ),
            ploc,
            flux,
        )
        for n, p, ploc, flux in zip((1.5, 0.8), params, plocs, (1e4, 2e4), strict=True)
    )
    assert np.abs(image - reference).max() < 2e-3 * reference.max()
    # the indices matter: the renderer's own de Vaucouleurs bulges differ
    dev = render(renderer, plocs, [1e4, 2e4], [psf], is_galaxy=[True, True], params=params)[0]
    assert np.abs(dev - reference).max() > 1e-2 * reference.max()


@pytest.mark.parametrize(
    ("is_galaxy", "indices", "error"),
    [
        ([True, True], [1.0, 7.0], "bulge_sersic_n=7"),
        ([True, True], [1.0], "one Sersic index per source"),
        ([False, True], [0.0, 2.0], None),  # a star's entry is ignored, whatever it holds
    ],
)
def test_per_galaxy_sersic_indices_are_checked(renderer, psf, is_galaxy, indices, error):
    params = np.array([[0.0, 0.7, 0.6, 0.8, 0.6, 0.8]] * 2)

    def draw() -> np.ndarray:
        return render(
            renderer,
            [[10.0, 10.0], [30.0, 30.0]],
            [1.0, 1.0],
            [psf],
            is_galaxy=is_galaxy,
            params=params,
            bulge_sersic_n=np.array(indices),
        )

    if error is None:
        assert draw().sum() == pytest.approx(2.0, rel=0.01)  # a little light leaves the image
    else:
        with pytest.raises(BlissValueError, match=error):
            draw()


def test_sersic_index_outside_galsim_range_is_refused():
    with pytest.raises(BlissValueError, match="bulge_sersic_n=7"):
        GalsimRenderer(bulge_sersic_n=7.0)


def test_galaxies_are_extended_and_stars_are_not(renderer, psf):
    plocs = [[12.0, 12.0], [36.0, 36.0]]
    params = np.array([SMALL_GALAXY, SMALL_GALAXY])
    image = render(renderer, plocs, [1e4, 1e4], [psf], is_galaxy=[False, True], params=params)[0]
    star, galaxy = image[:24, :24], image[24:, 24:]
    star_size = sum(second_moments(star)[:2])
    assert star_size == pytest.approx(
        sum(second_moments(render(renderer, [12.0, 12.0], [1e4], [psf])[0])[:2]), rel=0.02
    )
    assert sum(second_moments(galaxy)[:2]) > 1.5 * star_size


@pytest.mark.parametrize(
    ("beta", "long_axis"), [(0.0, "col"), (np.pi / 2, "row"), (np.pi / 4, "diagonal")]
)
def test_position_angle_convention(renderer, psf, beta, long_axis):
    params = (1.0, beta, 0.3, 1.0, 1.0, 0.5)  # pure elongated disk
    image = render(renderer, [24.0, 24.0], [1e4], [psf], is_galaxy=[True], params=params)[0]
    var_row, var_col, cov = second_moments(image)
    if long_axis == "col":
        assert var_col > 2 * var_row
    elif long_axis == "row":
        assert var_row > 2 * var_col
    else:  # +col towards +row: row and col grow together
        assert var_row == pytest.approx(var_col, rel=0.05)
        assert cov > 0.5 * var_row


def test_image_psf_reproduces_moffat(renderer, psf):
    drawn = psf.drawImage(nx=25, ny=25, scale=SCALE).array
    from_image = image_psf(7.0 * drawn, SCALE)  # any normalisation of the array
    assert from_image.flux == pytest.approx(1.0)
    ploc = (24.3, 23.6)
    expected = render(renderer, ploc, [1e4], [psf])[0]
    got = render(renderer, ploc, [1e4], [from_image])[0]
    assert got.sum() == pytest.approx(1e4, rel=0.01)
    assert np.abs(got - expected).max() < 0.02 * expected.max()


def test_psf_cache_follows_the_psf_object(renderer):
    narrow = render(renderer, [24.0, 24.0], [1e4], [moffat_psf(1.0)])[0]
    wide = render(renderer, [24.0, 24.0], [1e4], [moffat_psf(2.0)])[0]
    assert second_moments(wide)[0] > 2 * second_moments(narrow)[0]


def test_equal_psfs_share_the_cached_psf_work():
    renderer = GalsimRenderer()
    first = render(renderer, [24.0, 24.0], [1e4], [moffat_psf(1.3)])
    n_entries = len(renderer._psf_cache)
    again = render(renderer, [24.0, 24.0], [1e4], [moffat_psf(1.3)])  # an equal, new object
    assert np.array_equal(first, again)
    assert len(renderer._psf_cache) == n_entries
    image = image_psf(moffat_psf(1.3).drawImage(nx=25, ny=25, scale=SCALE).array, SCALE)
    render(renderer, [24.0, 24.0], [1e4], [image.dilate(1.1)])
    n_entries = len(renderer._psf_cache)
    render(renderer, [24.0, 24.0], [1e4], [image.dilate(1.1)])
    assert len(renderer._psf_cache) == n_entries


def test_undersampled_psf_warns():
    with pytest.warns(BlissWarning, match="Nyquist"):
        render(GalsimRenderer(), [24.0, 24.0], [1.0], [moffat_psf(0.6)])


def test_mismatched_lengths_raise(renderer, psf):
    with pytest.raises(BlissShapeError, match="flux_electrons"):
        renderer.render(
            np.zeros((2, 2)),
            np.ones((3, 1)),
            np.zeros(2, bool),
            np.zeros((2, 6)),
            [psf],
            SHAPE,
            SCALE,
        )
    with pytest.raises(BlissShapeError, match="galaxy_params"):
        renderer.render(
            np.zeros((2, 2)),
            np.ones((2, 1)),
            np.zeros(2, bool),
            np.zeros((2, 5)),
            [psf],
            SHAPE,
            SCALE,
        )


def test_wrong_number_of_psfs_raises(renderer, psf):
    with pytest.raises(BlissValueError, match="2 PSFs"):
        renderer.render(
            np.zeros((1, 2)),
            np.ones((1, 3)),
            np.zeros(1, bool),
            np.zeros((1, 6)),
            [psf] * 2,
            SHAPE,
            SCALE,
        )


@pytest.mark.parametrize(("column", "value"), [(0, 1.5), (2, 0.0), (3, -1.0), (4, 1.2)])
def test_bad_galaxy_params_raise(renderer, psf, column, value):
    params = np.array(SMALL_GALAXY)
    params[column] = value
    with pytest.raises(BlissValueError, match="galaxy_params"):
        render(renderer, [24.0, 24.0], [1.0], [psf], is_galaxy=[True], params=params)


def test_bad_psf_images_raise():
    with pytest.raises(BlissShapeError):
        image_psf(np.ones(25), SCALE)
    with pytest.raises(BlissValueError, match="non-finite"):
        image_psf(np.full((5, 5), np.nan), SCALE)
    with pytest.raises(BlissValueError, match="sums to"):
        image_psf(np.zeros((5, 5)), SCALE)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_stamp_px": 8}, {"min_stamp_px": 1}, {"folding_threshold": 0.0}, {"maxk_threshold": 2.0}],
)
def test_bad_renderer_arguments_raise(kwargs):
    with pytest.raises(BlissValueError, match=next(iter(kwargs))):
        GalsimRenderer(**kwargs)
