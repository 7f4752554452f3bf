import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from bliss.catalog.io import catalog_to_table, write_table
from bliss.errors import BlissConfigError
from bliss.predict.predictor import Predictor
from bliss.protocols import SurveyImage
from tests.conftest import catalog_columns as rows
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    cfg = compose_config(["mode=predict", "experiment=debug"], tmp_path_factory.mktemp("cfg"))
    torch.manual_seed(3)
    return instantiate(cfg.encoder).eval()


def make_image(height=72, width=52, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.poisson(300.0, size=(5, height, width)).astype(np.float32)
    images[:, 30:34, 20:24] += 5000.0  # a bright blob
    return SurveyImage(
        path=None,
        bands=("u", "g", "r", "i", "z"),
        images=images,
        background=np.full((5, height, width), 300.0, np.float32),
        psf_fwhm_arcsec=np.full(5, 1.3, np.float32),
        magzero=np.full(5, 29.0),
        wcs=None,
    )


def test_margin_covers_receptive_field(encoder):
    predictor = Predictor(encoder, chunk_px=16, progress=False)
    assert 2 * predictor.margin_px >= encoder.features.receptive_field_px


def test_chunking_does_not_change_features_or_rows(encoder):
    image = make_image()
    whole = Predictor(encoder, chunk_px=4096, progress=False)
    chunked = Predictor(encoder, chunk_px=16, batch_chunks=3, progress=False)
    f_whole = whole.tile_features(image)
    f_chunked = chunked.tile_features(image)
    # same convolutions on the same pixels: equal up to float32 summation order
    assert torch.allclose(f_whole, f_chunked, atol=1e-4, rtol=1e-4)
    # an untrained network's P(source) hovers near 0.5: threshold at its median so that about
    # half of the tiles report a source and the row-by-row comparison means something
    probs = rows(whole.predict(image, threshold=1e-6))["prob_source"]
    threshold = float(np.median(probs))
    rows_whole = rows(whole.predict(image, threshold=threshold))
    rows_chunked = rows(chunked.predict(image, threshold=threshold))
    assert len(rows_whole["row"]) == len(rows_chunked["row"]) > 0
    assert np.allclose(rows_whole["row"], rows_chunked["row"], atol=1e-4)
    assert np.allclose(rows_whole["fluxes"], rows_chunked["fluxes"], rtol=1e-3)


def test_windowed_mode_does_not_depend_on_batching(encoder):
    image = make_image()
    one = Predictor(encoder, window_px=32, margin_px=8, batch_chunks=1, progress=False)
    many = Predictor(encoder, window_px=32, margin_px=8, batch_chunks=7, progress=False)
    assert one.chunk_px == 16 and one.margin_px == 8
    assert torch.allclose(one.tile_features(image), many.tile_features(image), atol=1e-5)


def test_windowed_features_are_those_of_the_window_alone(encoder):
    # a core tile's features equal those of the 32-px window computed as a separate image
    image = make_image()
    features = Predictor(encoder, window_px=32, margin_px=8, progress=False).tile_features(image)
    window = {
        "images": torch.from_numpy(image.images[None, :, 8:40, 8:40]),
        "background": torch.from_numpy(image.background[None, :, 8:40, 8:40]),
        "psf_fwhm_arcsec": torch.from_numpy(image.psf_fwhm_arcsec[None]),
    }
    with torch.no_grad():
        alone = encoder.tile_features(window)
    assert torch.allclose(features[0, :, 4:8, 4:8], alone[0, :, 2:6, 2:6], atol=1e-5)


def test_bad_window(encoder):
    with pytest.raises(BlissConfigError, match="window_px"):
        Predictor(encoder, window_px=18, progress=False)
    with pytest.raises(BlissConfigError, match="window_px"):
        Predictor(encoder, window_px=16, margin_px=8, progress=False)


def test_image_not_multiple_of_tile_is_padded_and_rows_stay_inside(encoder):
    image = make_image(height=37, width=29)
    found = rows(Predictor(encoder, chunk_px=16, progress=False).predict(image, threshold=0.1))
    assert (found["row"] < 37).all() and (found["col"] < 29).all()


def test_nan_pixels_are_missing_data(encoder):
    image = make_image()
    image.images[:, 40:60, :] = np.nan
    features = Predictor(encoder, progress=False).tile_features(image)
    assert torch.isfinite(features).all()


def test_samples_have_the_same_columns_as_points(encoder):
    predictor = Predictor(encoder, progress=False)
    catalog, samples = predictor.predict_and_sample(make_image(), n_samples=2)
    assert len(samples) == 2
    assert {"plocs", "fluxes", "source_type"} <= set(samples[0].keys())
    assert {"plocs", "fluxes", "prob_source", "prob_galaxy"} <= set(catalog.keys())
    assert len(predictor.sample(make_image(), 3)) == 3
    with pytest.raises(BlissConfigError, match="n_samples"):
        predictor.sample(make_image(), -1)


def test_contract_columns_and_units(encoder, tmp_path):
    catalog = Predictor(encoder, progress=False).predict(make_image(), threshold=0.01)
    from bliss.simulator.field import simple_wcs

    table = catalog_to_table(
        catalog, ("u", "g", "r", "i", "z"), wcs=simple_wcs(72, 52, 0.396), meta={"BLISSVER": "x"}
    )
    np.testing.assert_allclose(table["x"].value, rows(catalog)["col"] - 0.5)
    for band in "ugriz":
        for suffix in ("", "_lo", "_hi"):
            assert table[f"flux_{band}{suffix}"].unit == "nmgy"
        assert table[f"mag_{band}"].unit == "mag"
        assert (table[f"flux_{band}_lo"] <= table[f"flux_{band}"]).all()
        assert (table[f"flux_{band}"] <= table[f"flux_{band}_hi"]).all()
    for column in ("x", "y", "ra", "dec", "prob_source", "prob_galaxy", "disk_q", "beta_rad"):
        assert column in table.colnames
    assert table["ra"].unit == "deg"
    assert len(table) > 0 and (table["prob_source"] > 0.01).all()
    for suffix in (".fits", ".parquet", ".csv"):
        path = write_table(table, tmp_path / f"cat{suffix}")
        assert path.exists()
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    with pytest.raises(BlissConfigError, match="unknown extension"):
        write_table(table, tmp_path / "cat.txt")


def test_location_quantiles_are_also_given_in_pixels(encoder):
    image = make_image()
    predictor = Predictor(encoder, progress=False)
    found = rows(predictor.predict(image, threshold=0.01, quantiles=(0.16, 0.84)))
    assert len(found["row"]) > 0
    low, high = found["plocs@0.16"], found["plocs@0.84"]
    # the point estimate is the median, between the quantiles, inside the 4-px tile's range
    assert (low <= found["plocs"] + 1e-4).all() and (found["plocs"] <= high + 1e-4).all()
    assert ((high - low) <= encoder.tile_slen).all()
    tile = encoder.tile_slen
    np.testing.assert_allclose(
        high - found["plocs"], (found["locs@0.84"] - found["locs"]) * tile, atol=1e-4
    )


def test_bad_threshold(encoder):
    with pytest.raises(BlissConfigError, match="threshold"):
        Predictor(encoder, progress=False).predict(make_image(), threshold=1.5)


def test_fluxes_follow_the_image_zero_point(encoder):
    """The network measures in its training calibration; a brighter zero point means more nmgy."""
    image = make_image()
    same = Predictor(encoder, progress=False, model_magzero=[29.0] * 5)
    reference = rows(same.predict_and_sample(image, threshold=0.01, n_samples=1)[0])
    image.magzero[:] = [29.0, 29.0, 30.0, 29.0, 28.5]  # r: 1 mag fainter per electron
    moved = rows(same.predict_and_sample(image, threshold=0.01, n_samples=1)[0])
    expected = 10 ** (0.4 * (29.0 - image.magzero))
    assert len(reference["row"]) > 0
    for key in ("fluxes", "fluxes@0.05", "fluxes@0.95"):
        np.testing.assert_allclose(moved[key], reference[key] * expected, rtol=1e-5)
    np.testing.assert_array_equal(moved["row"], reference["row"])
    assert not np.allclose(moved["fluxes"], reference["fluxes"])


def test_aperture_correction_scales_fluxes_only_when_the_model_takes_it(encoder):
    image = make_image()
    reference = rows(Predictor(encoder, progress=False).predict(image, threshold=0.01))
    factors = np.array([1.0, 1.02, 1.045, 1.05, 1.04])
    image.aperture_correction = factors
    corrected = rows(Predictor(encoder, progress=False).predict(image, threshold=0.01))
    declined = Predictor(encoder, progress=False, aperture_correction=False)
    assert len(reference["row"]) > 0
    for key in ("fluxes", "fluxes@0.05", "fluxes@0.95"):
        np.testing.assert_allclose(corrected[key], reference[key] * factors, rtol=1e-5)
    np.testing.assert_array_equal(corrected["prob_source"], reference["prob_source"])
    untouched = rows(declined.predict(image, threshold=0.01))["fluxes"]
    np.testing.assert_array_equal(untouched, reference["fluxes"])
    assert declined.applies_aperture_correction(image) is False


def test_model_magzero_must_match_bands(encoder):
    with pytest.raises(BlissConfigError, match="model_magzero has 3 values"):
        Predictor(encoder, progress=False, model_magzero=[29.0] * 3)


def with_fwhm_map(image, fwhm_map):
    return SurveyImage(
        image.path,
        image.bands,
        image.images,
        image.background,
        image.psf_fwhm_arcsec,
        image.magzero,
        image.wcs,
        psf_fwhm_map=fwhm_map,
    )


def test_constant_fwhm_map_equals_one_fwhm_per_band(encoder):
    image = make_image()
    flat = with_fwhm_map(image, np.full(image.images.shape, 1.3, np.float32))
    predictor = Predictor(encoder, window_px=32, margin_px=8, progress=False)
    assert torch.equal(predictor.tile_features(image), predictor.tile_features(flat))


def test_fwhm_map_is_local_and_chunking_invariant(encoder):
    image = make_image()
    _, height, width = image.images.shape
    seeing = np.broadcast_to(np.linspace(1.0, 2.0, width, dtype=np.float32), (5, height, width))
    varying = with_fwhm_map(image, np.ascontiguousarray(seeing))
    whole = Predictor(encoder, chunk_px=4096, progress=False).tile_features(varying)
    chunked = Predictor(encoder, chunk_px=16, batch_chunks=3, progress=False).tile_features(varying)
    assert torch.allclose(whole, chunked, atol=1e-4, rtol=1e-4)
    # the seeing reaches the features: they differ from those of one FWHM for the whole image
    flat = Predictor(encoder, chunk_px=4096, progress=False).tile_features(image)
    assert not torch.allclose(whole, flat, atol=1e-3)


def test_a_model_that_reads_the_psf_shape_gets_the_image_psfs_shape(tmp_path):
    import galsim

    from bliss.predict.predictor import image_psf_shape
    from bliss.simulator.psf_shape import moffat_psf_shape

    cfg = compose_config(
        ["mode=predict", "experiment=debug", "encoder.normalizer.psf_shape=true"], tmp_path
    )
    torch.manual_seed(3)
    shaped = instantiate(cfg.encoder).eval()
    image = make_image()
    # no PSF model: the round beta = 3.5 Moffat readers assume
    np.testing.assert_allclose(image_psf_shape(image), np.stack([moffat_psf_shape(3.5)] * 5))
    elongated = galsim.Moffat(beta=3.0, fwhm=1.3).shear(e1=0.12, e2=0.0)
    stamp = elongated.drawImage(nx=25, ny=25, scale=0.396).array
    image.psf = lambda band, row, col: stamp
    shape = image_psf_shape(image)
    assert shape.shape == (5, 3) and np.all(shape[:, 0] > 0.1)
    # the shape reaches the network: the same pixels with a round PSF give other features
    predictor = Predictor(shaped, chunk_px=4096, progress=False)
    with_shape = predictor.tile_features(image)
    image.psf = None
    round_psf = predictor.tile_features(image)
    assert not torch.allclose(with_shape, round_psf, atol=1e-4)
