"""Coverage of posterior intervals per magnitude bin and source type, and at several levels.

A pooled coverage can look calibrated while bright sources are overconfident and faint ones
underconfident; these functions split it by the true reference-band magnitude and the true
type, for every flux band and both position coordinates. Intervals come from an estimated
catalog's quantile keys ``<key>@<q>`` (as :meth:`bliss.predict.predictor.Predictor.predict`
writes them for ``quantiles=...``): the central ``level`` interval is
``[<key>@<(1 - level) / 2>, <key>@<(1 + level) / 2>]``.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.errors import BlissValueError
from bliss.metrics.detection import _bin_index, _check_bins
from bliss.metrics.flux import _paired_dmag, _summarise
from bliss.metrics.matching import Matches, _check_band, _check_matches

__all__ = [
    "PROFILE_SPLIT",
    "TYPE_NAMES",
    "binned_coverage",
    "format_binned_coverage",
    "format_profile_bias",
    "interval_hits",
    "level_quantiles",
    "profile_bias",
    "reliability",
]

#: ``source_type`` value -> name used in the tables
TYPE_NAMES = {0: "star", 1: "galaxy"}
#: a galaxy whose true ``disk_frac`` is below this is bulge-dominated in :func:`profile_bias`
PROFILE_SPLIT = 0.5


def level_quantiles(level: float) -> tuple[float, float]:
    """The two quantile probabilities of a central ``level`` interval, rounded as keys are.

    Raises:
        BlissValueError: ``level`` is not in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise BlissValueError(f"level={level}; expected a central-interval level in (0, 1).")
    return round((1 - level) / 2, 6), round((1 + level) / 2, 6)


def interval_hits(
    truth: FullCatalog, est: FullCatalog, matches: Matches, key: str, level: float
) -> Tensor:
    """Whether each matched true value lies in its central ``level`` interval.

    Args:
        truth: the true catalog, with ``key``.
        est: the estimated catalog, with ``<key>@<q>`` for both ends of the interval.
        matches: one ``(true_idx, est_idx)`` pair per image (see
            :func:`~bliss.metrics.matching.match_full_catalogs`).
        key: a catalog key, e.g. ``fluxes`` or ``plocs``.
        level: nominal coverage of the central interval, in (0, 1).

    Returns:
        One flag per matched pair and per component of ``key``. Shape: ``p d`` (bool).

    Raises:
        BlissValueError: ``key`` or an interval end is missing, or the matches do not fit.
    """
    _check_matches(truth, est, matches)
    low_q, high_q = level_quantiles(level)
    ends = [f"{key}@{q:g}" for q in (low_q, high_q)]
    missing = ([] if key in truth else [key]) + [k for k in ends if k not in est]
    if missing:
        raise BlissValueError(
            f"catalog keys {missing} are missing for the {level:g} interval of {key!r}; predict "
            f"with quantiles that include {low_q:g} and {high_q:g}."
        )
    low, high = (_matched(est, matches, end, 1) for end in ends)
    true_values = _matched(truth, matches, key, 0).to(low.device)
    return (true_values >= low) & (true_values <= high)


def binned_coverage(
    truth: FullCatalog,
    est: FullCatalog,
    matches: Matches,
    *,
    ref_band: int,
    bands: Sequence[str],
    mag_bins: Sequence[float],
    level: float = 0.9,
) -> list[dict]:
    """Coverage of every band's flux and of both coordinates, per true magnitude bin and type.

    Args:
        truth: the true catalog, with ``fluxes`` (nanomaggies, ``b n c``), ``plocs`` and
            ``source_type`` (0 star, 1 galaxy).
        est: the estimated catalog, with ``fluxes``, ``fluxes@<q>`` and ``plocs@<q>`` for the
            interval's two ends.
        matches: one ``(true_idx, est_idx)`` pair per image.
        ref_band: index of the band whose true magnitude bins the pairs.
        bands: band names, one per flux column (for the keys of the result).
        mag_bins: increasing AB magnitude edges; bins are ``[lo, hi)``.
        level: nominal coverage of the central interval [default: 0.9].

    Returns:
        One dict per (type, bin), stars first: ``type``, ``mag_lo``, ``mag_hi``, ``n``,
        ``coverage_flux_<band>`` for each band, ``coverage_y`` (row) and ``coverage_x``
        (column), and ``mag_bias_median`` (median reference-band ``est - true`` magnitude,
        positive when estimates are too faint). Empty cells hold ``nan``.

    Raises:
        BlissValueError: ``source_type`` is missing from ``truth``, ``bands`` does not match the
            flux columns, ``mag_bins`` is not increasing, or a key is missing.
    """
    _check_band("truth", truth, ref_band)
    _check_band("est", est, ref_band)
    if "source_type" not in truth:
        raise BlissValueError(
            f"truth has keys {truth.keys()}; `source_type` (0 star, 1 galaxy) is needed to split "
            "coverage by type."
        )
    if len(bands) != truth["fluxes"].shape[-1]:
        raise BlissValueError(
            f"bands={list(bands)} but the catalogs have {truth['fluxes'].shape[-1]} flux bands; "
            "give one name per band, in order."
        )
    edges = _check_bins(mag_bins)
    flux_hits = interval_hits(truth, est, matches, "fluxes", level)
    loc_hits = interval_hits(truth, est, matches, "plocs", level)
    true_mag, dmag = _paired_dmag(truth, est, matches, ref_band)
    kind = _matched(truth, matches, "source_type", 0)[:, 0].round().long()
    bins = _bin_index(true_mag, edges)
    rows = []
    for type_value, type_name in TYPE_NAMES.items():
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            cell = (bins == j) & (kind.to(bins.device) == type_value)
            row: dict = {"type": type_name, "mag_lo": lo, "mag_hi": hi, "n": int(cell.sum())}
            for b, band in enumerate(bands):
                row[f"coverage_flux_{band}"] = _mean(flux_hits[cell.to(flux_hits.device), b])
            for axis, name in ((0, "y"), (1, "x")):
                row[f"coverage_{name}"] = _mean(loc_hits[cell.to(loc_hits.device), axis])
            row["mag_bias_median"] = _summarise(dmag[cell])["mag_bias_median"]
            rows.append(row)
    return rows


def profile_bias(
    truth: FullCatalog,
    est: FullCatalog,
    matches: Matches,
    *,
    ref_band: int,
    mag_bins: Sequence[float],
    level: float = 0.9,
) -> list[dict]:
    """Flux bias and coverage of matched galaxies, bulge-dominated apart from disk-dominated.

    A de Vaucouleurs bulge holds much of its light in faint, extended wings that a noisy image
    barely constrains, where an exponential disk holds little: at one magnitude, a posterior
    that cannot tell the two apart measures bulges too faint and disks too bright, and the
    median over all galaxies depends on the test set's mix of the two. This splits what
    :func:`binned_coverage`'s galaxy rows pool.

    Args:
        truth: the true catalog, with ``fluxes``, ``source_type`` and ``disk_frac`` (the disk's
            share of the flux, ``b n 1``).
        est: the estimated catalog, with ``fluxes`` and ``fluxes@<q>`` for the interval's ends.
        matches: one ``(true_idx, est_idx)`` pair per image.
        ref_band: index of the band whose magnitudes bin and measure the pairs.
        mag_bins: increasing AB magnitude edges (true magnitude); bins are ``[lo, hi)``.
        level: nominal coverage of the central flux interval [default: 0.9].

    Returns:
        One dict per (profile, bin), bulge-dominated (``disk_frac < PROFILE_SPLIT``) first:
        ``profile``, ``mag_lo``, ``mag_hi``, ``n``, ``mag_bias_median`` (``est - true``,
        positive when too faint), ``mag_abs_err_median`` and ``coverage_flux`` (reference band).
        Empty cells hold ``nan``.

    Raises:
        BlissValueError: ``source_type`` or ``disk_frac`` is missing from ``truth``, a key is
            missing from ``est``, or ``mag_bins`` is not increasing.
    """
    missing = [key for key in ("source_type", "disk_frac") if key not in truth]
    if missing:
        raise BlissValueError(
            f"truth lacks {missing} (has {sorted(truth.keys())}); the profile split needs each "
            "true galaxy's `disk_frac`, as a simulated field's truth table holds it."
        )
    _check_band("truth", truth, ref_band)
    _check_band("est", est, ref_band)
    edges = _check_bins(mag_bins)
    hits = interval_hits(truth, est, matches, "fluxes", level)[:, ref_band]
    true_mag, dmag = _paired_dmag(truth, est, matches, ref_band)
    galaxy = _matched(truth, matches, "source_type", 0)[:, 0].round().long().to(dmag.device) == 1
    disk_frac = _matched(truth, matches, "disk_frac", 0)[:, 0].to(dmag.device)
    bins = _bin_index(true_mag, edges)
    rows = []
    for name, chosen in (
        ("bulge-dominated", galaxy & (disk_frac < PROFILE_SPLIT)),
        ("disk-dominated", galaxy & (disk_frac >= PROFILE_SPLIT)),
    ):
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            cell = chosen & (bins == j)
            rows.append(
                {
                    "profile": name,
                    "mag_lo": lo,
                    "mag_hi": hi,
                    "n": int(cell.sum()),
                    **_summarise(dmag[cell]),
                    "coverage_flux": _mean(hits[cell.to(hits.device)]),
                }
            )
    return rows


def reliability(
    truth: FullCatalog,
    est: FullCatalog,
    matches: Matches,
    levels: Sequence[float],
    *,
    bands: Sequence[str],
) -> dict[str, list[float]]:
    """Observed coverage at several nominal levels, per true type, for fluxes and positions.

    Args:
        truth: the true catalog, with ``fluxes``, ``plocs`` and ``source_type``.
        est: the estimated catalog, with ``fluxes@<q>`` and ``plocs@<q>`` for both ends of every
            level's central interval.
        matches: one ``(true_idx, est_idx)`` pair per image.
        levels: nominal central-interval levels, each in (0, 1).
        bands: band names, one per flux column.

    Returns:
        ``levels`` and, per type present (``star``, ``galaxy``), ``"<type> flux_<band>"`` for each
        band and ``"<type> position"`` (row and column pooled): observed coverage per level.

    Raises:
        BlissValueError: a level is not in (0, 1), or a key is missing.
    """
    if "source_type" not in truth:
        raise BlissValueError(
            f"truth has keys {truth.keys()}; `source_type` (0 star, 1 galaxy) is needed to split "
            "coverage by type."
        )
    kind = _matched(truth, matches, "source_type", 0)[:, 0].round().long()
    curves: dict[str, list[float]] = {"levels": [float(level) for level in levels]}
    hits = {
        level: (
            interval_hits(truth, est, matches, "fluxes", level),
            interval_hits(truth, est, matches, "plocs", level),
        )
        for level in levels
    }
    for type_value, type_name in TYPE_NAMES.items():
        chosen = kind == type_value
        if not bool(chosen.any()):
            continue
        for b, band in enumerate(bands):
            curves[f"{type_name} flux_{band}"] = [
                _mean(flux[chosen.to(flux.device), b]) for flux, _ in hits.values()
            ]
        curves[f"{type_name} position"] = [
            _mean(loc[chosen.to(loc.device)]) for _, loc in hits.values()
        ]
    return curves


def format_binned_coverage(rows: Sequence[dict], bands: Sequence[str], level: float = 0.9) -> str:
    """A text table of :func:`binned_coverage` rows: one line per type and bin."""
    header = f"{'type':<8}{'r':<8}{'n':>6}" + "".join(f"{band:>6}" for band in bands)
    lines = [
        f"coverage of the central {level:.0%} interval (flux per band; position)",
        header + f"{'y':>6}{'x':>6}{'bias':>9}",
    ]
    for row in rows:
        values = [row[f"coverage_flux_{band}"] for band in bands]
        values += [row["coverage_y"], row["coverage_x"]]
        lines.append(
            f"{row['type']:<8}{row['mag_lo']:g}-{row['mag_hi']:<5g}{row['n']:>6}"
            + "".join(f"{v:>6.2f}" for v in values)
            + f"{row['mag_bias_median']:>+9.4f}"
        )
    return "\n".join(lines)


def format_profile_bias(rows: Sequence[dict], level: float = 0.9) -> str:
    """A text table of :func:`profile_bias` rows: one line per profile and bin."""
    lines = [
        f"galaxies by true profile (disk_frac < {PROFILE_SPLIT:g}: bulge-dominated): median "
        f"reference-band dmag, median |dmag|, {level:.0%} flux coverage",
        f"{'profile':<17}{'r':<8}{'n':>6}{'bias':>9}{'|dmag|':>8}{'cov':>6}",
    ]
    for row in rows:
        lines.append(
            f"{row['profile']:<17}{row['mag_lo']:g}-{row['mag_hi']:<5g}{row['n']:>6}"
            f"{row['mag_bias_median']:>+9.4f}{row['mag_abs_err_median']:>8.3f}"
            f"{row['coverage_flux']:>6.2f}"
        )
    return "\n".join(lines)


def _matched(catalog: FullCatalog, matches: Matches, key: str, side: int) -> Tensor:
    """``catalog[key]`` of the matched sources of all images. Shape: ``p d``.

    ``side`` is 0 for the true catalog's indices, 1 for the estimate's.
    """
    values = catalog[key]
    parts = [values[i, pair[side].to(values.device)] for i, pair in enumerate(matches)]
    return torch.cat(parts) if parts else values.new_zeros(0, values.shape[-1])


def _mean(flags: Tensor) -> float:
    return float(flags.double().mean()) if flags.numel() else math.nan
