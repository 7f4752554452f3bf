"""Observing conditions of real SDSS fields (psField PSFs, sky maps) for training simulations."""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bliss.errors import BlissConfigError
from bliss.protocols import ObservedConditions
from bliss.surveys.moffat import add_halo
from bliss.surveys.sdss._files import field_dir, find_file, frame_name
from bliss.surveys.sdss.frames import (
    SDSS_BANDS,
    _read_frame,
    _sky_counts,
    field_gains_and_psfield,
)
from bliss.surveys.sdss.psf import SDSS_PIXEL_SCALE_ARCSEC, SdssPsf

__all__ = ["sdss_observed_conditions"]


def sdss_observed_conditions(
    data_dir: str | Path,
    fields: Sequence[Sequence[int]],
    bands: Sequence[str] = SDSS_BANDS,
    grid: int = 6,
    halo: Mapping[str, float] | None = None,
) -> ObservedConditions:
    """The psField PSF and the sky of every band at a ``grid x grid`` lattice of places per field.

    The PSF of an SDSS field varies smoothly over its 1489 x 2048 pixels (a low-order
    polynomial), so a lattice of 6 x 6 places samples it well; each place becomes one row of the
    table. The sky comes from the frame's sky grid (HDU 2) times the gain.

    Args:
        data_dir: root of the SDSS files, laid out as for ``survey=sdss_frames``.
        fields: ``[[run, camcol, field], ...]``.
        bands: bands, in channel order.
        grid: places per frame side.
        halo: ``{fraction, fwhm_arcsec, beta}`` of a Moffat halo added to every psField PSF
            (:func:`bliss.surveys.moffat.add_halo`): real SDSS stars carry ~5 % of their light
            in wings the psField PSF lacks. The FWHM labels stay those of the psField core.

    Raises:
        BlissConfigError: no fields, or ``grid`` < 1.
        BlissIOError: a psField, frame or photoField file is missing or damaged (named).
    """
    if not fields or grid < 1:
        raise BlissConfigError(
            f"simulator.conditions.observed: fields={list(fields)}, grid={grid}; expected at least "
            "one [run, camcol, field] and grid >= 1."
        )
    psf_images, fwhm, sky, labels = [], [], [], []
    for run, camcol, field in tqdm(fields, desc="observed conditions", unit="field"):
        folder = field_dir(data_dir, run, camcol, field)
        gains, psfield = field_gains_and_psfield(data_dir, run, camcol, field)
        psfs, skies = {}, {}
        for band in bands:
            psfs[band] = SdssPsf.from_psfield(psfield, band, run=run, camcol=camcol, field=field)
            path = find_file([folder], frame_name(band, run, camcol, field), "frame")
            _, header, _, _, sky_grid = _read_frame(path, band, run, camcol, field)
            skies[band] = _sky_counts(*sky_grid) * gains[band]
        # cut-outs (tests/data) record where they sit on the full frame the psField describes
        origin = (int(header.get("CUTROW0", 0)), int(header.get("CUTCOL0", 0)))
        height, width = skies[bands[0]].shape
        for row in (np.arange(grid) + 0.5) * height / grid:
            for col in (np.arange(grid) + 0.5) * width / grid:
                at = (row + origin[0], col + origin[1])
                images = [psfs[b].image(*at) for b in bands]
                if halo is not None:
                    images = [
                        add_halo(p, pixel_scale_arcsec=SDSS_PIXEL_SCALE_ARCSEC, **halo)
                        for p in images
                    ]
                psf_images.append(np.stack(images))
                fwhm.append([psfs[b].fwhm_arcsec(*at, method="moffat") for b in bands])
                sky.append([skies[b][int(row), int(col)] for b in bands])
                labels.append(f"{run}-{camcol}-{field} r={at[0]:.0f} c={at[1]:.0f}")
    return ObservedConditions(
        bands=tuple(bands),
        psf_images=np.stack(psf_images).astype(np.float32),
        psf_fwhm_arcsec=np.array(fwhm, dtype=np.float32),
        sky_electrons=np.array(sky, dtype=np.float32),
        labels=tuple(labels),
    )
