"""What ``mode=predict`` catalogs: one image, or many (a glob, a list, or SDSS fields).

``predict.input`` names several inputs when it is a list or a glob (``'data/*.fits'``), and so
does ``survey.fields`` with ``survey=sdss_frames``. Each input gets a name, from which its
outputs in the ``predict.output`` directory are named: the file name without ``.fits`` /
``.fit`` / ``.fts`` (and ``.fz`` / ``.gz`` / ``.bz2``), or ``sdss-<run6>-<camcol>-<field4>``.
"""

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from bliss.errors import BlissConfigError

__all__ = ["MERGED_NAME", "PredictInput", "has_several_inputs", "input_name", "resolve_inputs"]

#: the merged catalog (a Parquet dataset partitioned by input) inside ``predict.output``
MERGED_NAME = "merged.parquet"
_COMPRESSION = (".fz", ".gz", ".bz2")
_FITS = (".fits", ".fit", ".fts")


@dataclass(frozen=True)
class PredictInput:
    """One image to catalog.

    Attributes:
        name: stem of its output files (unique among the inputs of a run).
        label: how messages name it (the path, or the SDSS field and its folder).
        path: the FITS file, or None for an SDSS field.
        field: ``(run, camcol, field)`` for an SDSS field, else None.
    """

    name: str
    label: str
    path: Path | None = None
    field: tuple[int, int, int] | None = None


def has_several_inputs(cfg: DictConfig) -> bool:
    """Whether ``cfg`` asks to catalog several inputs into the ``predict.output`` directory.

    Raises:
        BlissConfigError: ``survey=sdss_frames`` with ``predict.input`` a list or a glob (that
            survey reads its images by run / camcol / field).
    """
    spec = cfg.predict.input
    listed = isinstance(spec, ListConfig | list | tuple) or glob.has_magic(str(spec))
    if "fields" in cfg.survey:  # a survey that reads its own images, e.g. sdss_frames
        if listed:
            raise BlissConfigError(
                f"predict.input={spec} but survey={cfg.survey.name} reads its images by run, camcol "
                "and field and ignores predict.input; list the fields instead, e.g. "
                "survey.fields=[[94,1,12],[94,1,13]]."
            )
        return cfg.survey.fields is not None
    return listed


def input_name(path: str | Path) -> str:
    """The output stem of an input file: ``data/f-0012.fits.fz`` -> ``f-0012``."""
    name = Path(path).name
    for suffixes in (_COMPRESSION, _FITS):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def resolve_inputs(spec: Any, survey: Any) -> list[PredictInput]:
    """The inputs of a run with several: files of ``predict.input``, or ``survey.fields``.

    A list item that is a glob expands to its sorted matches; one that matches nothing stays as
    an input that fails (the run reports it and goes on). Repeated files are cataloged once.

    Raises:
        BlissConfigError: no input at all, or two inputs would write the same catalog name.
    """
    if getattr(survey, "fields", None):
        inputs = [
            PredictInput(
                f"sdss-{run:06d}-{camcol}-{field:04d}",
                f"SDSS run {run} camcol {camcol} field {field} ({survey.data_dir}/{run}/{camcol}/{field})",
                field=(run, camcol, field),
            )
            for run, camcol, field in dict.fromkeys(survey.fields)
        ]
    else:
        items = [spec] if isinstance(spec, str | Path) else list(spec)
        paths: list[Path] = []
        for item in items:
            matched = sorted(glob.glob(str(item))) if glob.has_magic(str(item)) else []
            paths += [Path(m) for m in matched] or [Path(str(item))]
        inputs = [PredictInput(input_name(p), str(p), path=p) for p in dict.fromkeys(paths)]
    if not inputs:
        raise BlissConfigError(
            f"predict.input={spec} names no input; give a FITS file, a list, or a glob such as "
            "'data/*.fits'."
        )
    _check_names(inputs)
    return inputs


def _check_names(inputs: Sequence[PredictInput]) -> None:
    seen: dict[str, PredictInput] = {}
    for item in inputs:
        if item.name in (Path(MERGED_NAME).stem, Path(MERGED_NAME).name):
            raise BlissConfigError(
                f"input {item.label} would write catalogs named {item.name!r}, the name of the "
                f"merged catalog; rename the file."
            )
        other = seen.setdefault(item.name, item)
        if other is not item:
            raise BlissConfigError(
                f"inputs {other.label} and {item.label} would both write catalogs named "
                f"{item.name!r} in predict.output; catalog them into different predict.output "
                "directories, or rename one."
            )
