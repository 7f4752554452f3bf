"""SDSS test data: the committed cut-outs, the full shared files, and measuring helpers."""

import bz2
import gzip
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from scipy import ndimage

from bliss.surveys.sdss import SdssField, read_sdss_field

RUN, CAMCOL, FIELD = 94, 1, 12
#: 192 x 192 cut-outs of run 94 / camcol 1 / field 12, see tests/data/README.md
SDSS_CUTOUTS = Path(__file__).parents[2] / "data" / "sdss"
SHARED_SDSS = (
    Path(os.environ.get("BLISS_SHARED_DATA", Path(__file__).parents[4] / "shared" / "data"))
    / "sdss"
)
#: (row, col) of the bright star in the r cut-out (full frame: 453.3, 1163.5)
CUTOUT_STAR = (83.3, 113.5)
STAMP_HALF_PX = 12


@pytest.fixture
def cutout_copy(tmp_path: Path) -> Path:
    """A writable copy of the cut-out tree (``<copy>/94/1/12/...``)."""
    return Path(shutil.copytree(SDSS_CUTOUTS, tmp_path / "sdss"))


@pytest.fixture(scope="module")
def cutout_field() -> SdssField:
    """The five cut-out bands aligned to r (~0.3 s)."""
    return read_sdss_field(SDSS_CUTOUTS, RUN, CAMCOL, FIELD)


@pytest.fixture(scope="module")
def shared_sdss() -> Path:
    """The full SDSS files of ../shared/data; skips the test when they are absent."""
    if not (SHARED_SDSS / str(RUN) / str(CAMCOL) / str(FIELD)).is_dir():
        pytest.skip(f"the shared SDSS data are not at {SHARED_SDSS}")
    return SHARED_SDSS


def field_file(root: Path, name: str) -> Path:
    """Path of ``name`` in the field folder (the photoField one level up)."""
    folder = root / str(RUN) / str(CAMCOL)
    return folder / name if name.startswith("photoField") else folder / str(FIELD) / name


def edit_fits(path: Path, edit: Callable[[fits.HDUList], None]) -> None:
    """Apply ``edit`` to the HDUs of ``path`` and write it back, compressed as before."""
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "rb") as stream:
        content = io.BytesIO(stream.read())
    plain = path.with_name(path.name + ".plain")
    with fits.open(content, lazy_load_hdus=False) as hdus:
        edit(hdus)
        hdus.writeto(plain)
    with open(plain, "rb") as source, opener(path, "wb") as out:
        shutil.copyfileobj(source, out)
    plain.unlink()


def centroid(image: np.ndarray, mask: np.ndarray, row: float, col: float) -> tuple[float, float]:
    """Windowed centroid (``sep.winpos``, Gaussian window sigma 2 px) of a star near (row, col)."""
    data = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float64)
    cols, rows, flags = sep.winpos(data, [col], [row], [2.0], mask=mask)
    assert flags[0] == 0
    return float(rows[0]), float(cols[0])


def stamp(image: np.ndarray, row: float, col: float) -> np.ndarray:
    """25 x 25 px around pixel (round(row), round(col))."""
    r, c = round(row), round(col)
    return image[
        r - STAMP_HALF_PX : r + STAMP_HALF_PX + 1, c - STAMP_HALF_PX : c + STAMP_HALF_PX + 1
    ]


def psf_stamp(psf: np.ndarray, row: float, col: float) -> np.ndarray:
    """The PSF image (centred on its middle pixel) moved to the sub-pixel offset of (row, col)."""
    shifted = ndimage.shift(psf, (row - round(row), col - round(col)), order=3)
    middle = psf.shape[0] // 2
    return shifted[
        middle - STAMP_HALF_PX : middle + STAMP_HALF_PX + 1,
        middle - STAMP_HALF_PX : middle + STAMP_HALF_PX + 1,
    ]


def ncc(first: np.ndarray, second: np.ndarray) -> float:
    """Normalised cross-correlation of two equal-shape images (1 = same up to scale and offset)."""
    first = first - first.mean()
    second = second - second.mean()
    return float((first * second).sum() / np.sqrt((first**2).sum() * (second**2).sum()))
