"""Module boundaries (STYLE.md section 2): parse every bliss module and check its imports."""

import ast
from pathlib import Path

import pytest

import bliss

PACKAGE = Path(bliss.__file__).parent
EVERYTHING = "*"
#: leaves every module may use: errors, and `atomic` (atomic file writes, imports no bliss)
CORE = {"catalog", "errors", "atomic"}

#: subpackage -> subpackages it may import ("bliss" is the top-level package itself)
ALLOWED: dict[str, set[str] | str] = {
    "errors": set(),
    "atomic": set(),
    "catalog": {"catalog", "errors"},
    "surveys": CORE | {"surveys"},
    "simulator": CORE | {"surveys", "simulator"},
    "posterior": CORE | {"posterior"},
    "metrics": CORE | {"metrics"},
    "encoder": CORE | {"posterior", "metrics", "encoder"},
    "data": CORE | {"data"},
    "predict": EVERYTHING,  # except main, below
    "main": EVERYTHING,
    "bliss": EVERYTHING,  # bliss/__init__.py: re-exports (except main, below)
    "conf": set(),
    # SLURM submission: checks a job's config (launch), and the launcher that runs them
    "launch": {"errors"},
    "slurm_launcher": {"launch"},
    # `python -m bliss.sample_data.make_sample` regenerates the shipped field: a CLI like main
    "sample_data": EVERYTHING,
}
#: single modules with an extra edge
EXTRA: dict[str, set[str]] = {
    "bliss.data.generate": {"simulator"},
    "bliss.data.on_the_fly": {"simulator"},
}
NEVER_MAIN = {"predict", "bliss"}
OUTSIDE = {"tests", "case_studies", "benchmarks"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Absolute names of every module imported anywhere in the file (lazy imports included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "bliss":
                # `from bliss import encoder` imports the subpackage; `from bliss import
                # __version__` the top-level package
                for alias in node.names:
                    is_sub = (PACKAGE / alias.name).is_dir() or (
                        PACKAGE / f"{alias.name}.py"
                    ).exists()
                    found.append((node.lineno, f"bliss.{alias.name}" if is_sub else "bliss"))
            else:
                found.append((node.lineno, target))
    return found


def forbidden_edges(source: str, module: str, is_package: bool = False) -> list[str]:
    """The forbidden imports of one module, as readable strings."""
    owner = _subpackage(module)
    if owner not in ALLOWED:
        return [f"{module}: subpackage `{owner}` is not in the boundary table; add it"]
    allowed = ALLOWED[owner]
    problems = []
    for line, target in _imported_modules(ast.parse(source), module, is_package):
        top = target.split(".")[0]
        if top in OUTSIDE:
            problems.append(f"{module}:{line} imports {target} (bliss never imports {top})")
            continue
        if top != "bliss":
            continue
        target_sub = _subpackage(target)
        if target_sub == "main" and owner in NEVER_MAIN:
            problems.append(f"{module}:{line} imports {target}; only the CLI may use bliss.main")
        elif allowed != EVERYTHING and target_sub not in allowed | EXTRA.get(module, set()):
            problems.append(f"{module}:{line} imports {target} ({owner} -> {target_sub})")
    return problems


def _bliss_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_files_are_found() -> None:
    modules = {_module_name(p) for p in _bliss_files()}
    assert {
        "bliss",
        "bliss.errors",
        "bliss.main",
        "bliss.encoder.encoder",
        "bliss.posterior.factors",
    } <= modules


@pytest.mark.parametrize("path", _bliss_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_forbidden_imports(path: Path) -> None:
    problems = forbidden_edges(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "module", "bad"),
    [
        ("from bliss.catalog import TileCatalog", "bliss.errors", True),
        ("from bliss.atomic import atomic_path", "bliss.catalog.io", True),
        ("from bliss.atomic import atomic_path", "bliss.data.shards", False),
        ("from bliss.errors import BlissIOError", "bliss.atomic", True),
        ("from bliss.errors import BlissError", "bliss.catalog.tile", False),
        ("import bliss.encoder", "bliss.posterior.factors", True),
        ("def f():\n    from bliss.main import run\n", "bliss.encoder.training", True),
        ("from bliss.data.on_the_fly import X", "bliss.encoder.training", True),
        ("from bliss.metrics import detection_metrics", "bliss.encoder.evaluation", False),
        ("from bliss.simulator.simulate import ImageSimulator", "bliss.data.generate", False),
        ("from bliss.simulator.simulate import ImageSimulator", "bliss.data.cached", True),
        ("from bliss.surveys.base import PsfAndSky", "bliss.simulator.conditions", False),
        # the PyTorch renderer: a simulator module like render.py (catalog, errors, simulator)
        ("from bliss.simulator._stamps import frequencies", "bliss.simulator.torch_render", False),
        ("from bliss.catalog import FullCatalog", "bliss.simulator.torch_render", False),
        ("from bliss.encoder.layers import ConvBlock", "bliss.simulator.torch_render", True),
        ("from bliss.data.shards import save_shard", "bliss.simulator.torch_render", True),
        ("from bliss.simulator.torch_render import TorchRenderer", "bliss.data.cached", True),
        ("from bliss.surveys import ParametricSurvey", "bliss.catalog.io", True),
        # the photoObj reader is survey data access; the comparison with it lives in predict
        ("from bliss.surveys.sdss.photoobj import read_photoobj", "bliss.predict.reference", False),
        (
            "from bliss.metrics.reference import compare_with_reference",
            "bliss.predict.reference",
            False,
        ),
        ("from bliss.predict.plots import plot_delta_mag", "bliss.metrics.reference", True),
        ("from bliss.metrics import match_full_catalogs", "bliss.surveys.sdss.photoobj", True),
        (
            "from bliss.predict.reference import compare_from_config",
            "bliss.surveys.sdss.photoobj",
            True,
        ),
        ("from bliss.predict.plots import plot_cutout_grid", "bliss.metrics.detection", True),
        # PSF models (surveys/psfex.py, surveys/sdss/psf.py) feed the simulator, never the reverse
        ("from bliss.simulator.render import image_psf", "bliss.surveys.psfex", True),
        ("from bliss.surveys.psfex import PsfexPsf", "bliss.simulator.simulate", False),
        ("from bliss.surveys.psfex import PsfexPsf", "bliss.main", False),
        ("from ..simulator import prior", "bliss.data.cached", True),
        ("from . import shards", "bliss.data", False),
        ("from bliss import encoder", "bliss.metrics.flux", True),
        ("import bliss", "bliss.catalog.tile", True),
        ("import bliss", "bliss.predict.run", False),
        ("from bliss.main import build_simulator", "bliss.predict.run", True),
        ("from bliss.encoder.checkpoint import load_encoder", "bliss.predict.run", False),
        ("from bliss.encoder import Encoder", "bliss.main", False),
        ("from case_studies.x import y", "bliss.main", True),
        ("import numpy", "bliss.newpackage.thing", True),
    ],
)
def test_checker_flags_forbidden_edges(source: str, module: str, bad: bool) -> None:
    is_package = module == "bliss.data"
    assert bool(forbidden_edges(source, module, is_package)) == bad
