"""Region quantities in prediction: estimates from the same features, and their FITS file."""

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from bliss.errors import BlissValueError
from bliss.predict.predictor import Predictor
from bliss.predict.region_quantities import write_region_quantities
from tests.unit.predict.test_predictor import make_image


def test_estimates_come_from_the_features_the_catalog_used(region_encoder):
    image = make_image(height=64, width=48)
    predictor = Predictor(region_encoder, chunk_px=4096, progress=False)
    catalog, samples, regions = predictor.predict_with_regions(image, quantiles=(0.05, 0.95))
    plain, _ = predictor.predict_and_sample(image)
    assert int(catalog["n_sources"][0]) == int(plain["n_sources"][0])
    assert samples == []
    shear, kappa = regions["shear"], regions["kappa"]
    assert shear.median.shape == (1, 1, 2) and shear.region_px == (64, 48)
    assert kappa.median.shape == (4, 3, 1) and kappa.region_px == (16, 16)
    with torch.no_grad():
        features = predictor.tile_features(image)
        params = region_encoder.region_params(features)["shear"]
    expected = region_encoder.regions["shear"].point_estimate(params)
    np.testing.assert_allclose(shear.median, expected[0].numpy(), rtol=1e-6)
    for estimate in (shear, kappa):
        assert (estimate.quantiles[0.05] < estimate.median).all()
        assert (estimate.median < estimate.quantiles[0.95]).all()


def test_a_map_that_does_not_divide_the_image_is_refused(region_encoder):
    predictor = Predictor(region_encoder, chunk_px=4096, progress=False)
    with pytest.raises(BlissValueError, match="region_px=16"):
        predictor.predict_with_regions(make_image(height=72, width=52))


def test_the_file_holds_one_table_per_quantity(region_encoder, tmp_path):
    image = make_image(height=64, width=48)
    _, _, regions = Predictor(region_encoder, chunk_px=4096, progress=False).predict_with_regions(
        image
    )
    path = write_region_quantities(regions, tmp_path / "field_regions.fits", {"CKPT": "x.ckpt"})
    with fits.open(path) as hdus:
        assert [h.name for h in hdus] == ["PRIMARY", "SHEAR", "KAPPA"]
        assert hdus[0].header["CKPT"] == "x.ckpt"
        assert hdus["KAPPA"].header["QUANTITY"] == "convergence_map"
    table = Table.read(path, hdu="KAPPA")
    assert len(table) == 12
    # regions tile the image: 4 rows x 3 columns of 16 px, in raster order
    assert table["row_min"].tolist() == [0] * 3 + [16] * 3 + [32] * 3 + [48] * 3
    assert table["col_max"].tolist() == [16, 32, 48] * 4
    np.testing.assert_allclose(table["convergence_map"], regions["kappa"].median.reshape(12, 1))
    shear = Table.read(path, hdu="SHEAR")
    assert shear["shear"].shape == (1, 2) and {"shear@0.05", "shear@0.95"} <= set(shear.colnames)
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed
