"""PSFEx PSF models (``*.psf``, as DES/DECam and many other pipelines write them).

Layout of a PSFEx file (checked on the DES file ``DECam_00154912_12_psfcat.psf``; see also
the PSFEx manual, Bertin 2011, and GalSim's ``galsim/des/des_psfex.py``):

* HDU 1, ``EXTNAME = 'PSF_DATA'``: a one-row binary table whose ``PSF_MASK`` column is the basis
  cube, ``PSFAXIS3`` x ``PSFAXIS2`` x ``PSFAXIS1`` (terms x rows x columns, 6 x 25 x 25 there),
  each image centred on pixel ``(PSFAXIS2 // 2, PSFAXIS1 // 2)``.
* ``PSF_SAMP``: image pixels per PSF-model pixel (0.976 there); the basis is sampled on that grid.
* ``POLNAXIS = 2`` context variables ``POLNAME1 = X_IMAGE``, ``POLNAME2 = Y_IMAGE`` (1-indexed
  image pixels, as SExtractor measures them), in one group of degree ``POLDEG1 = d``. With
  ``u = (X_IMAGE - POLZERO1) / POLSCAL1`` and ``v = (Y_IMAGE - POLZERO2) / POLSCAL2`` the PSF is
  ``sum_k u**i_k v**j_k basis[k]`` with the terms ordered ``j`` outer, ``i`` inner, ``i + j <= d``:
  ``1, u, u**2, v, u v, v**2`` for ``d = 2``; so ``PSFAXIS3 = (d + 1)(d + 2) / 2``.
  ``POLNAXIS = 0`` (a constant PSF, one basis image) is also read.
* ``PSF_FWHM`` (optional): PSFEx's own FWHM estimate, image pixels.

The model is the pixel-integrated ("effective") PSF, so it is resampled, never convolved with
the pixel again. Resampling uses GalSim's ``InterpolatedImage`` with a Lanczos-3 kernel.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from bliss.errors import BlissError, BlissIOError, BlissValueError
from bliss.surveys.moffat import psf_fwhm_arcsec

if TYPE_CHECKING:  # imported where used: a third of a second that predict rarely needs
    import galsim

__all__ = ["DECAM_PIXEL_SCALE_ARCSEC", "PsfexPsf"]

#: DECam pixel side at the centre of the focal plane, arcsec (DES coadds use the same)
DECAM_PIXEL_SCALE_ARCSEC = 0.263
#: sub-pixel sampling used to measure the half-maximum FWHM
_FWHM_OVERSAMPLE = 8
_REQUIRED_KEYS = ("POLNAXIS", "PSF_SAMP", "PSFNAXIS", "PSFAXIS1", "PSFAXIS2", "PSFAXIS3")
_CONTEXT_KEYS = ("POLNGRP", "POLDEG1", "POLNAME1", "POLNAME2", "POLZERO1", "POLZERO2")
_CONTEXT_KEYS += ("POLSCAL1", "POLSCAL2", "POLGRP1", "POLGRP2")


class PsfexPsf:
    """The position-dependent PSFEx PSF of one band of one image (a CCD or a coadd tile).

    It has the methods of :class:`bliss.surveys.sdss.SdssPsf` (:class:`bliss.protocols.PsfModel`):
    positions are 0-indexed ``(row, col)`` pixels of the image the model was fitted on, i.e.
    ``X_IMAGE = col + 1`` and ``Y_IMAGE = row + 1``.

    Args:
        band: band name, e.g. ``"r"`` (only used in messages).
        basis: the PSFEx basis, on the PSF-model grid. Shape ``k h w``.
        degree: polynomial degree ``d``; ``k`` must be ``(d + 1)(d + 2) / 2``.
        x_zero: ``POLZERO1``, 1-indexed image pixels.
        x_scale: ``POLSCAL1``, image pixels.
        y_zero: ``POLZERO2``.
        y_scale: ``POLSCAL2``.
        sampling: ``PSF_SAMP``, image pixels per PSF-model pixel [default: 1].
        pixel_scale_arcsec: image pixel side, arcsec [default: 0.263, DECam].

    Raises:
        BlissValueError: the basis is not ``k h w`` with ``k`` matching ``degree``, or a scale is
            not positive.

    Example:
        >>> import numpy as np
        >>> yy, xx = np.mgrid[-12:13, -12:13]
        >>> core = np.exp(-(xx**2 + yy**2) / 8.0)
        >>> basis = np.stack([core, 0.1 * core * xx / 4, np.zeros_like(core)])  # 1, u, v
        >>> psf = PsfexPsf("r", basis, 1, 1024.5, 1000.0, 2048.5, 2000.0)
        >>> psf.polynomial_origin
        (2047.5, 1023.5)
        >>> float(round(psf.image(100.0, 200.0).sum(), 6))
        1.0
        >>> round(psf.fwhm_arcsec(*psf.polynomial_origin, method="half_max"), 2)
        1.24
    """

    def __init__(
        self,
        band: str,
        basis: np.ndarray,
        degree: int,
        x_zero: float,
        x_scale: float,
        y_zero: float,
        y_scale: float,
        sampling: float = 1.0,
        pixel_scale_arcsec: float = DECAM_PIXEL_SCALE_ARCSEC,
    ) -> None:
        basis = np.asarray(basis, dtype=np.float64)
        n_terms = (degree + 1) * (degree + 2) // 2
        if basis.ndim != 3 or degree < 0 or basis.shape[0] != n_terms:
            raise BlissValueError(
                f"basis has shape {basis.shape} for degree={degree}; expected `k h w` with "
                f"k = (degree + 1)(degree + 2) / 2 = {n_terms} polynomial terms."
            )
        for name, value in (
            ("x_scale", x_scale),
            ("y_scale", y_scale),
            ("sampling", sampling),
            ("pixel_scale_arcsec", pixel_scale_arcsec),
        ):
            if not value > 0:
                raise BlissValueError(f"{name}={value}; expected a positive number.")
        self.band = band
        self.basis = basis
        self.degree = int(degree)
        self.x_zero, self.x_scale = float(x_zero), float(x_scale)
        self.y_zero, self.y_scale = float(y_zero), float(y_scale)
        self.sampling = float(sampling)
        self.pixel_scale_arcsec = float(pixel_scale_arcsec)
        #: PSFEx's own FWHM estimate (header ``PSF_FWHM``), image pixels, when read from a file
        self.psfex_fwhm_px: float | None = None

    @classmethod
    def from_file(
        cls, path: str | Path, band: str, *, pixel_scale_arcsec: float = DECAM_PIXEL_SCALE_ARCSEC
    ) -> "PsfexPsf":
        """Read a PSFEx ``.psf`` file.

        Args:
            path: the PSFEx file (``*_psfcat.psf`` for DES single-epoch images).
            band: band name, e.g. ``"r"``.
            pixel_scale_arcsec: image pixel side, arcsec [default: 0.263, DECam].

        Raises:
            BlissIOError: the file is missing or not FITS; it has no ``PSF_DATA`` table with a
                ``PSF_MASK`` column; a keyword is missing; or the polynomial layout is not the
                one described in this module (the message names the file and the keyword).
        """
        path = Path(path)
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdus:
                header, basis = _psf_table(hdus, path)
                psf = cls._from_header(header, basis, path, band, pixel_scale_arcsec)
        except BlissError:
            raise
        except FileNotFoundError as err:
            raise BlissIOError(
                f"PSFEx file {path} does not exist; check the path (DES names it "
                "<image>_psfcat.psf)."
            ) from err
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
            raise BlissIOError(
                f"PSFEx file {path} could not be read ({type(err).__name__}: {err}); expected a FITS "
                "file written by PSFEx with a PSF_DATA table."
            ) from err
        fwhm = header.get("PSF_FWHM")
        psf.psfex_fwhm_px = float(fwhm) if isinstance(fwhm, int | float) else None
        return psf

    @classmethod
    def _from_header(
        cls, header: fits.Header, basis: np.ndarray, path: Path, band: str, scale: float
    ) -> "PsfexPsf":
        missing = [key for key in _REQUIRED_KEYS if key not in header]
        n_context = header.get("POLNAXIS")
        if n_context:
            missing += [key for key in _CONTEXT_KEYS if key not in header]
        if missing:
            raise BlissIOError(
                f"PSFEx file {path}: PSF_DATA header lacks {missing}; this is not a PSFEx model "
                "(expected POLNAXIS, POLZERO1/2, POLSCAL1/2, POLNAME1/2, POLDEG1, PSF_SAMP, PSFAXIS1..3)."
            )
        if n_context not in (0, 2):
            raise BlissIOError(
                f"PSFEx file {path}: POLNAXIS={n_context}; only models in the image position "
                "(POLNAXIS=2, X_IMAGE and Y_IMAGE) or constant models (POLNAXIS=0) are supported."
            )
        degree, zeros, scales = 0, (0.0, 0.0), (1.0, 1.0)
        if n_context == 2:
            names = (str(header["POLNAME1"]).strip(), str(header["POLNAME2"]).strip())
            groups = (header["POLNGRP"], header["POLGRP1"], header["POLGRP2"])
            if not (names[0].startswith("X") and names[1].startswith("Y")) or groups != (1, 1, 1):
                raise BlissIOError(
                    f"PSFEx file {path}: POLNAME1/2={names}, POLNGRP/POLGRP1/POLGRP2={groups}; "
                    "expected X*_IMAGE and Y*_IMAGE in a single group (1, 1, 1)."
                )
            degree = int(header["POLDEG1"])
            zeros = (float(header["POLZERO1"]), float(header["POLZERO2"]))
            scales = (float(header["POLSCAL1"]), float(header["POLSCAL2"]))
        n_terms = (degree + 1) * (degree + 2) // 2
        shape = (header["PSFAXIS3"], header["PSFAXIS2"], header["PSFAXIS1"])
        if header["PSFNAXIS"] != 3 or shape[0] != n_terms:
            raise BlissIOError(
                f"PSFEx file {path}: PSFNAXIS={header['PSFNAXIS']}, PSFAXIS3={shape[0]} for "
                f"POLDEG1={degree}; expected PSFNAXIS=3 and PSFAXIS3 = (POLDEG1 + 1)(POLDEG1 + 2) / 2 "
                f"= {n_terms}. The file is damaged or uses a polynomial layout bliss does not read."
            )
        if basis.size != np.prod(shape):
            raise BlissIOError(
                f"PSFEx file {path}: PSF_MASK holds {basis.size} values, expected PSFAXIS3 x "
                f"PSFAXIS2 x PSFAXIS1 = {' x '.join(map(str, shape))}; the file is damaged."
            )
        if not (header["PSF_SAMP"] > 0 and scales[0] > 0 and scales[1] > 0):
            raise BlissIOError(
                f"PSFEx file {path}: PSF_SAMP={header['PSF_SAMP']}, POLSCAL1/2={scales}; "
                "expected positive values."
            )
        return cls(
            band,
            basis.reshape(shape),
            degree,
            zeros[0],
            scales[0],
            zeros[1],
            scales[1],
            float(header["PSF_SAMP"]),
            scale,
        )

    @property
    def polynomial_origin(self) -> tuple[float, float]:
        """0-indexed ``(row, col)`` of ``(POLZERO2, POLZERO1)``: the model there is ``basis[0]``."""
        return self.y_zero - 1.0, self.x_zero - 1.0

    @property
    def stamp_shape(self) -> tuple[int, int]:
        """``(h, w)`` of :meth:`image`, odd; the PSF centre is pixel ``(h // 2, w // 2)``."""
        height, width = (
            2 * int(np.ceil((size // 2) * self.sampling - 1e-6)) + 1
            for size in self.basis.shape[1:]
        )
        return height, width

    def weights(self, row: float, col: float) -> np.ndarray:
        """Weight of each basis image at image pixel ``(row, col)`` (0-indexed). Shape ``k``."""
        u = (col + 1.0 - self.x_zero) / self.x_scale
        v = (row + 1.0 - self.y_zero) / self.y_scale
        return np.array(
            [u**i * v**j for j in range(self.degree + 1) for i in range(self.degree + 1 - j)]
        )

    def model_image(self, row: float, col: float) -> np.ndarray:
        """The PSFEx model at ``(row, col)`` on its own grid (``PSF_SAMP``), not normalised.

        Shape ``h w`` of the basis (25 x 25 for DES).
        """
        return np.einsum("k,khw->hw", self.weights(row, col), self.basis)

    def profile(self, row: float, col: float) -> "galsim.InterpolatedImage":
        """The model at ``(row, col)`` as a unit-flux GalSim profile in image pixels (scale 1).

        It includes the pixel response: draw it with ``method="no_pixel"``.

        Raises:
            BlissValueError: the model sums to <= 0 there (a position far outside the image).
        """
        model = self.model_image(row, col)
        total = model.sum()
        if not total > 0:
            raise BlissValueError(
                f"the {self.band}-band PSFEx model at (row, col)=({row}, {col}) sums to {total}; "
                "expected a positive total. The position is probably far outside the image "
                f"(the polynomial is centred on {self.polynomial_origin})."
            )
        import galsim

        return galsim.InterpolatedImage(
            galsim.Image(model / total, scale=self.sampling),
            x_interpolant=galsim.Lanczos(3),
            flux=1.0,
        )

    def image(self, row: float, col: float) -> np.ndarray:
        """The PSF at image pixel ``(row, col)``, resampled to image pixels, sum 1.

        The image is pixel-integrated (what a point source deposits), centred on pixel
        ``(h // 2, w // 2)``. Shape ``h w`` (:attr:`stamp_shape`, 25 x 25 for DES).

        Raises:
            BlissValueError: the model sums to <= 0 at ``(row, col)``.
        """
        height, width = self.stamp_shape
        drawn = self.profile(row, col).drawImage(nx=width, ny=height, scale=1.0, method="no_pixel")
        return drawn.array.astype(np.float64) / drawn.array.sum()

    def fwhm_arcsec(
        self, row: float, col: float, method: str = "effective", *, beta: float = 3.5
    ) -> float:
        """Full width at half maximum of the PSF at ``(row, col)``, arcsec.

        Args:
            row: image row (0-indexed).
            col: image column.
            method: ``"effective"`` [default]: the FWHM of the Gaussian with the same
                noise-equivalent area ``1 / sum(p**2)``, as ``SdssPsf`` measures it.
                ``"half_max"``: ``2 sqrt(A / pi)`` with ``A`` the area above half the peak, on
                the model drawn 8x finer (the geometric mean of the axes' FWHM).
                ``"moffat"``: the FWHM of the circular pixel-integrated Moffat of index ``beta``
                that fits the image best (least squares), i.e. the ``PSF_FWHM`` that, with
                ``PSF_BETA = beta``, describes this PSF to ``bliss mode=predict``.
            beta: Moffat index for ``method="moffat"`` [default: 3.5, the presets' value].

        Raises:
            BlissValueError: ``method`` is not one of the three names.
        """
        if method == "half_max":  # the model drawn 8x finer, not a spline of the pixels
            height, width = self.stamp_shape
            fine = self.profile(row, col).drawImage(
                nx=width * _FWHM_OVERSAMPLE,
                ny=height * _FWHM_OVERSAMPLE,
                scale=1.0 / _FWHM_OVERSAMPLE,
                method="no_pixel",
            )
            area_px = (fine.array >= fine.array.max() / 2).sum() / _FWHM_OVERSAMPLE**2
            return float(2.0 * np.sqrt(area_px / np.pi) * self.pixel_scale_arcsec)
        return psf_fwhm_arcsec(self.image(row, col), self.pixel_scale_arcsec, method, beta)

    def __repr__(self) -> str:
        """Band, degree, stamp shape and sampling."""
        return (
            f"PsfexPsf(band={self.band!r}, degree={self.degree}, n_terms={self.basis.shape[0]}, "
            f"stamp={self.stamp_shape}, sampling={self.sampling:.4f})"
        )


def _psf_table(hdus: fits.HDUList, path: Path) -> tuple[fits.Header, np.ndarray]:
    """The ``PSF_DATA`` header and the flat ``PSF_MASK`` values."""
    for hdu in hdus[1:]:
        if isinstance(hdu, fits.BinTableHDU) and "PSF_MASK" in hdu.columns.names:
            if len(hdu.data) != 1:
                raise BlissIOError(
                    f"PSFEx file {path}: the PSF_DATA table has {len(hdu.data)} rows; expected 1."
                )
            return hdu.header, np.asarray(hdu.data["PSF_MASK"][0], dtype=np.float64).ravel()
    names = [hdu.name for hdu in hdus]
    raise BlissIOError(
        f"PSFEx file {path} has no binary table with a PSF_MASK column (HDUs {names}); expected the "
        "PSF_DATA extension PSFEx writes. Is this a PSFEx .psf file?"
    )
