"""``bliss mode=simulate``: simulated fields in the predict input layout plus their truth tables.

``simulate.output`` receives ``field_<i>.fits`` (one HDU per band, as ``mode=predict`` reads),
``truth_<i>.fits`` (the drawn catalog, docs/simulate.md) and ``config.yaml`` (the survey, prior,
simulator and simulate sections that made them), so that

    bliss mode=simulate simulate.output=sim
    bliss mode=evaluate 'evaluate.input=sim/field_*.fits' 'evaluate.truth=sim/truth_*.fits'

scores bliss on fields whose truth is known.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bliss.cli.generate import build_simulator
from bliss.errors import BlissConfigError

__all__ = ["field_paths", "run_simulate"]

CONFIG_NAME = "config.yaml"
#: the simulate keys that change what a field holds (n_fields and output do not)
_RECIPE_KEYS = ("seed_offset", "compress", "write_background")


def field_paths(output: str | Path, index: int) -> tuple[Path, Path]:
    """The image and truth table paths of field ``index`` in ``output``."""
    output = Path(output)
    return output / f"field_{index:04d}.fits", output / f"truth_{index:04d}.fits"


def _check(spec: DictConfig) -> int:
    n_fields = spec.n_fields
    if isinstance(n_fields, bool) or not isinstance(n_fields, int) or n_fields < 1:
        raise BlissConfigError(
            f"simulate.n_fields={n_fields!r}; expected an integer >= 1, e.g. simulate.n_fields=10."
        )
    if spec.output is None or not str(spec.output):
        raise BlissConfigError(
            "simulate.output is not set; expected a directory, e.g. simulate.output=sim."
        )
    if not isinstance(spec.seed_offset, int) or spec.seed_offset < 0:
        raise BlissConfigError(
            f"simulate.seed_offset={spec.seed_offset!r}; expected an integer >= 0."
        )
    return n_fields


def _recipe(cfg: DictConfig) -> dict[str, Any]:
    """What decides the fields' content, resolved in the whole config."""
    recipe: dict[str, Any] = {"seed": cfg.seed}
    for key in ("survey", "prior", "simulator"):
        recipe[key] = OmegaConf.to_container(cfg[key], resolve=True)
    recipe["simulate"] = {key: cfg.simulate[key] for key in _RECIPE_KEYS}
    return recipe


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _check_existing(output: Path, recipe: dict[str, Any]) -> None:
    """Refuse to add fields to a directory whose fields were drawn from another config.

    Raises:
        BlissConfigError: ``output`` has a ``config.yaml`` whose recipe differs from ``recipe``.
    """
    saved_path = output / CONFIG_NAME
    if not saved_path.exists():
        return
    saved = OmegaConf.to_container(OmegaConf.load(saved_path))
    section = saved.get("simulate") or {}
    saved["simulate"] = {key: section.get(key) for key in _RECIPE_KEYS}
    old, new = _flatten(saved), _flatten(recipe)
    differ = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:5])
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        raise BlissConfigError(
            f"simulate.output={output} holds fields simulated with another config ({shown}"
            f"{more}); choose another simulate.output, or delete that directory to replace them."
        )


def run_simulate(cfg: DictConfig) -> dict[str, Any]:
    """Write ``simulate.n_fields`` simulated fields and truth tables into ``simulate.output``.

    Field ``i`` is drawn with seed ``seed + simulate.seed_offset + i``, so the same command
    writes the same fields; complete pairs already there are kept (and reported), never
    overwritten.

    Returns:
        ``output`` (the directory), ``written`` and ``skipped`` (field indices), ``images`` and
        ``truths`` (the paths of all ``n_fields`` fields).

    Raises:
        BlissConfigError: a bad ``simulate`` key, or ``simulate.output`` holds fields from
            another config.
    """
    from tqdm import tqdm

    from bliss.atomic import atomic_path
    from bliss.simulator.field import write_simulated_field

    spec = cfg.simulate
    n_fields = _check(spec)
    simulator = build_simulator(cfg)  # validates every simulator key before any work
    output = Path(spec.output)
    recipe = _recipe(cfg)
    _check_existing(output, recipe)
    output.mkdir(parents=True, exist_ok=True)
    saved = {**recipe, "simulate": OmegaConf.to_container(spec, resolve=True)}
    with atomic_path(output / CONFIG_NAME) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))

    written, skipped, images, truths = [], [], [], []
    for index in tqdm(range(n_fields), desc="simulate", unit="field", disable=n_fields < 2):
        image, truth = field_paths(output, index)
        images.append(image)
        truths.append(truth)
        if image.exists() and truth.exists():  # both are written atomically: complete
            skipped.append(index)
            continue
        write_simulated_field(
            simulator,
            cfg.seed + spec.seed_offset + index,
            image,
            truth,
            compress=spec.compress,
            write_background=spec.write_background,
        )
        written.append(index)
    if skipped:
        print(f"kept {len(skipped)} complete field(s) already in {output} (not overwritten)")
    print(
        f"{len(written)} field(s) written to {output}; score bliss on them with\n"
        f"  bliss mode=evaluate 'evaluate.input={output}/field_*.fits' "
        f"'evaluate.truth={output}/truth_*.fits'"
    )
    return {
        "output": output,
        "written": written,
        "skipped": skipped,
        "images": images,
        "truths": truths,
    }
