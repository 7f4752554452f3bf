"""Download the files of one SDSS field from the Science Archive Server (SAS).

The DR17 SAS layout, rerun 301 (``<run>`` unpadded, ``<run6>`` zero-padded to 6 digits,
``<field4>`` to 4)::

    <base_url>/frames/301/<run>/<camcol>/frame-<band>-<run6>-<camcol>-<field4>.fits.bz2
    <base_url>/301/<run>/photoField-<run6>-<camcol>.fits
    <redux_url>/301/<run>/objcs/<camcol>/psField-<run6>-<camcol>-<field4>.fit
    <redux_url>/301/<run>/objcs/<camcol>/fpM-<run6>-<band><camcol>-<field4>.fit.gz
    <base_url>/301/<run>/<camcol>/photoObj-<run6>-<camcol>-<field4>.fits   (the SDSS catalog)

with ``base_url = https://data.sdss.org/sas/dr17/eboss/photoObj`` and ``redux_url`` its sibling
``.../eboss/photo/redux``.
"""

import bz2
import gzip
import http.client
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from bliss.atomic import atomic_path
from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.sdss._files import (
    check_field_ids,
    field_dir,
    fpm_name,
    frame_name,
    photofield_name,
    photoobj_name,
    psfield_name,
)

__all__ = ["DEFAULT_BASE_URL", "RERUN", "download_sdss_field", "sdss_file_urls"]

DEFAULT_BASE_URL = "https://data.sdss.org/sas/dr17/eboss/photoObj"
#: the photometric reduction of DR8 and later
RERUN = 301
_BANDS = ("u", "g", "r", "i", "z")
_FITS_BLOCK = 2880
_CHUNK = 1 << 20


def sdss_file_urls(
    run: int,
    camcol: int,
    field: int,
    bands: tuple[str, ...] = ("u", "g", "r", "i", "z"),
    base_url: str = DEFAULT_BASE_URL,
    redux_url: str | None = None,
    photoobj: bool = False,
) -> dict[str, str]:
    """Where each file of a field lives on the SAS, and where it goes under ``data_dir``.

    Args:
        run: SDSS run.
        camcol: camera column, 1..6.
        field: field number.
        bands: bands whose frame and fpM files are wanted [default: u, g, r, i, z].
        base_url: the ``photoObj`` root [default: DR17 SAS].
        redux_url: the ``photo/redux`` root [default: ``base_url`` with its last path segment
            replaced by ``photo/redux``].
        photoobj: also the field's photoObj catalog (for ``evaluate.reference=photoobj``).

    Returns:
        Relative path (``<run>/<camcol>/<field>/<name>``, or ``<run>/<camcol>/<name>`` for the
        photoField) -> URL: one frame and one fpM per band, the psField and the photoField (and
        the photoObj).

    Example:
        >>> urls = sdss_file_urls(94, 1, 12, bands=("r",))
        >>> urls["94/1/12/frame-r-000094-1-0012.fits.bz2"]
        'https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/94/1/frame-r-000094-1-0012.fits.bz2'
        >>> urls["94/1/12/psField-000094-1-0012.fit"]
        'https://data.sdss.org/sas/dr17/eboss/photo/redux/301/94/objcs/1/psField-000094-1-0012.fit'
        >>> urls["94/1/photoField-000094-1.fits"]
        'https://data.sdss.org/sas/dr17/eboss/photoObj/301/94/photoField-000094-1.fits'
    """
    base_url = base_url.rstrip("/")
    if redux_url is None:
        redux_url = f"{base_url.rsplit('/', 1)[0]}/photo/redux"
    redux_url = redux_url.rstrip("/")
    field_prefix = f"{run}/{camcol}/{field}"
    objcs = f"{redux_url}/{RERUN}/{run}/objcs/{camcol}"
    urls = {}
    for band in bands:
        name = frame_name(band, run, camcol, field)
        urls[f"{field_prefix}/{name}"] = f"{base_url}/frames/{RERUN}/{run}/{camcol}/{name}"
    for band in bands:
        name = fpm_name(band, run, camcol, field)
        urls[f"{field_prefix}/{name}"] = f"{objcs}/{name}"
    name = psfield_name(run, camcol, field)
    urls[f"{field_prefix}/{name}"] = f"{objcs}/{name}"
    name = photofield_name(run, camcol)
    urls[f"{run}/{camcol}/{name}"] = f"{base_url}/{RERUN}/{run}/{name}"
    if photoobj:
        name = photoobj_name(run, camcol, field)
        urls[f"{field_prefix}/{name}"] = f"{base_url}/{RERUN}/{run}/{camcol}/{name}"
    return urls


def download_sdss_field(
    run: int,
    camcol: int,
    field: int,
    data_dir: str | Path,
    base_url: str = DEFAULT_BASE_URL,
    bands: tuple[str, ...] = ("u", "g", "r", "i", "z"),
    *,
    redux_url: str | None = None,
    timeout_s: float = 60.0,
    photoobj: bool = False,
) -> list[Path]:
    """Fetch the frames, fpM masks, psField and photoField of a field that are not yet on disk.

    Files go to ``<data_dir>/<run>/<camcol>/<field>/`` (photoField to
    ``<data_dir>/<run>/<camcol>/``), the layout :func:`bliss.surveys.sdss.read_sdss_field`
    reads. Each is written to a temporary name and renamed when complete, so an interrupted
    download leaves nothing behind. A file already there is skipped if it is complete (a
    whole number of 2880-byte FITS blocks, after decompressing ``.bz2`` / ``.gz``); an
    incomplete one is fetched again.

    Args:
        run: SDSS run.
        camcol: camera column, 1..6.
        field: field number.
        data_dir: root folder for the files.
        base_url: the SAS ``photoObj`` root [default: DR17].
        bands: bands to fetch [default: u, g, r, i, z].
        redux_url: the SAS ``photo/redux`` root (psField, fpM) [default: derived from
            ``base_url``, see :func:`sdss_file_urls`].
        timeout_s: network timeout per request, seconds [default: 60].
        photoobj: also fetch the field's photoObj catalog (the SDSS pipeline's, for
            ``bliss mode=evaluate evaluate.reference=photoobj``) [default: False].

    Returns:
        The local path of every file of the field (downloaded or already there).

    Raises:
        BlissValueError: ``run``, ``camcol`` or ``field`` is not a valid id, or a band is unknown.
        BlissIOError: a URL cannot be reached or answers with an error, or the download is
            incomplete; the message names the URL.
    """
    check_field_ids(run, camcol, field)
    unknown = sorted(set(bands) - set(_BANDS))
    if unknown or not bands:
        raise BlissValueError(f"bands={list(bands)}; expected names from {list(_BANDS)}.")
    data_dir = Path(data_dir)
    field_dir(data_dir, run, camcol, field).mkdir(parents=True, exist_ok=True)
    paths = []
    urls = sdss_file_urls(run, camcol, field, bands, base_url, redux_url, photoobj)
    for relative, url in urls.items():
        path = data_dir / relative
        if not (path.is_file() and _is_complete(path)):
            _fetch(url, path, timeout_s)
        paths.append(path)
    return paths


def _fetch(url: str, path: Path, timeout_s: float) -> None:
    """Download ``url`` to ``path`` atomically and check it is complete."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(path) as tmp:
            expected = response.headers.get("Content-Length")
            with open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
            size = tmp.stat().st_size
            if expected is not None and size != int(expected):
                raise BlissIOError(
                    f"downloading {url}: got {size} bytes, the server announced {expected}; "
                    "the connection was cut. Run the download again."
                )
            if not _is_complete(tmp, path.suffix):
                raise BlissIOError(
                    f"downloading {url}: the {size} bytes received are not a complete FITS file "
                    "(truncated or not FITS); check the URL and run the download again."
                )
    except urllib.error.HTTPError as err:
        raise BlissIOError(
            f"downloading {url}: the server answered HTTP {err.code} ({err.reason}); expected the "
            "file. Check run, camcol, field and base_url."
        ) from err
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise BlissIOError(
            f"downloading {url}: the server cannot be reached ({reason}); check the network "
            "connection (are you offline?) and base_url."
        ) from err


def _is_complete(path: Path, suffix: str | None = None) -> bool:
    """A non-empty whole number of FITS blocks, after decompression for ``.bz2`` / ``.gz``.

    ``suffix`` overrides ``path.suffix`` (for a temporary file).
    """
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(suffix or path.suffix)
    if opener is None:
        size = path.stat().st_size
        return size > 0 and size % _FITS_BLOCK == 0
    size = 0
    try:
        with opener(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
    except (OSError, EOFError):
        return False
    return size > 0 and size % _FITS_BLOCK == 0
