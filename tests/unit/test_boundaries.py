"""Module boundaries: every bliss import must be an arrow that ``architecture.toml`` allows.

The architecture file at the repo root lists the parts of bliss, the parts each may import, the
forbidden arrows and the tolerated import circles; this test parses every module under bliss/
with ``ast`` (lazy imports inside functions included) and checks each import against it.
"""

import ast
import tomllib
from pathlib import Path

import pytest

import bliss

PACKAGE = Path(bliss.__file__).parent
ARCHITECTURE = PACKAGE.parent / "architecture.toml"
OUTSIDE = {"tests", "case_studies", "benchmarks"}
ANY = "*"


def load_architecture(path: Path = ARCHITECTURE) -> dict:
    """The architecture file, with each part's ``may_import`` as a set."""
    with path.open("rb") as stream:
        spec = tomllib.load(stream)
    for part in spec["parts"].values():
        part["may_import"] = set(part["may_import"])
    spec["modules"] = {k: set(v) for k, v in spec.get("modules", {}).items()}
    return spec


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def part_of(module: str) -> str:
    """``bliss.predict.loop`` -> ``predict``; ``bliss`` -> ``bliss``; ``tests.x`` -> ``outside``."""
    top, *rest = module.split(".")
    if top in OUTSIDE:
        return "outside"
    return rest[0] if rest else top


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).is_dir() or (PACKAGE / relative).with_suffix(".py").exists()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (never run)."""
    skipped = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imported_modules(
    source: str, module: str, is_package: bool = False, runtime_only: bool = False
) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of the file, resolved to absolute module names.

    ``from bliss.x import y`` names module ``bliss.x.y`` when ``y`` is a submodule, else
    ``bliss.x``. ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``.
    """
    found = []
    tree = ast.parse(source)
    skipped = _type_checking_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "bliss":
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.append((node.lineno, sub if _is_module(sub) else target))
            else:
                found.append((node.lineno, target))
    return found


def forbidden_edges(
    source: str, module: str, is_package: bool = False, spec: dict | None = None
) -> list[str]:
    """The imports of one module that the architecture does not allow, as readable strings."""
    spec = spec or load_architecture()
    owner = part_of(module)
    if owner not in spec["parts"]:
        return [f"{module}: part `{owner}` is not in architecture.toml; add it"]
    allowed = spec["parts"][owner]["may_import"] | spec["modules"].get(module, set())
    problems = []
    for line, target in imported_modules(source, module, is_package):
        top = target.split(".")[0]
        if top not in OUTSIDE and top != "bliss":
            continue
        target_part = part_of(target)
        if target_part == owner:
            continue
        for rule in spec["forbidden"]:
            if rule["from"] in (ANY, owner) and rule["to"] == target_part:
                problems.append(f"{module}:{line} imports {target}: forbidden ({rule['why']})")
                break
        else:
            if ANY not in allowed and target_part not in allowed:
                problems.append(
                    f"{module}:{line} imports {target} ({owner} -> {target_part} is not in "
                    f"architecture.toml's parts.{owner}.may_import)"
                )
    return problems


def _bliss_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    """Module -> the bliss modules it imports at run time (package ``__init__`` s included)."""
    graph = {}
    for path in _bliss_files():
        module = module_name(path)
        targets = imported_modules(
            path.read_text(), module, path.name == "__init__.py", runtime_only=True
        )
        graph[module] = {t for _, t in targets if t.split(".")[0] == "bliss" and t != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_files_are_found() -> None:
    modules = {module_name(p) for p in _bliss_files()}
    assert {
        "bliss",
        "bliss.errors",
        "bliss.protocols",
        "bliss.cli.main",
        "bliss.encoder.encoder",
        "bliss.evaluate.truth",
        "bliss.posterior.factors",
    } <= modules


def test_every_part_is_described() -> None:
    spec = load_architecture()
    parts = {part_of(module_name(p)) for p in _bliss_files()}
    assert parts <= set(spec["parts"]), parts - set(spec["parts"])
    assert {"cli", "evaluate", "predict", "protocols"} <= parts
    for name, part in spec["parts"].items():
        assert part["role"], name
        assert part["may_import"] <= set(spec["parts"]) | {ANY}, name


@pytest.mark.parametrize("path", _bliss_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_forbidden_imports(path: Path) -> None:
    problems = forbidden_edges(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_files() -> None:
    allowed = [sorted(c) for c in load_architecture()["cycles"]["allowed"]]
    cycles = [c for c in import_cycles(import_graph()) if c not in allowed]
    assert not cycles, f"import circles: {cycles}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_a_forbidden_arrow_in_the_file_fails(tmp_path: Path) -> None:
    """The guard reads the file: widening a part to "*" still leaves forbidden arrows forbidden."""
    text = ARCHITECTURE.read_text().replace(
        'may_import = ["encoder", "posterior", "metrics", "simulator", "catalog", "protocols", '
        '"errors", "atomic", "bliss"]',
        'may_import = ["*"]',
    )
    assert text != ARCHITECTURE.read_text()
    (tmp_path / "architecture.toml").write_text(text)
    spec = load_architecture(tmp_path / "architecture.toml")
    source = "from bliss.evaluate.truth import evaluate_files"
    assert forbidden_edges(source, "bliss.predict.loop", spec=spec)
    assert not forbidden_edges(
        "from bliss.metrics import match_catalogs", "bliss.predict.loop", spec=spec
    )


@pytest.mark.parametrize(
    ("source", "module", "bad"),
    [
        ("from bliss.catalog import TileCatalog", "bliss.errors", True),
        ("from bliss.atomic import atomic_path", "bliss.catalog.io", False),
        ("from bliss.atomic import atomic_path", "bliss.data.shards", False),
        ("from bliss.errors import BlissIOError", "bliss.atomic", True),
        ("from bliss.errors import BlissError", "bliss.catalog.tile", False),
        ("from bliss.errors import BlissError", "bliss.protocols", False),
        ("from bliss.catalog import FullCatalog", "bliss.protocols", True),
        ("import bliss.encoder", "bliss.posterior.factors", True),
        ("def f():\n    from bliss.cli.main import run\n", "bliss.encoder.training", True),
        ("from bliss.cli.model import load_model_and_survey", "bliss.predict.loop", True),
        ("from bliss.data.on_the_fly import X", "bliss.encoder.training", True),
        ("from bliss.metrics import detection_metrics", "bliss.encoder.evaluation", False),
        ("from bliss.simulator.simulate import ImageSimulator", "bliss.data.generate", False),
        ("from bliss.simulator.simulate import ImageSimulator", "bliss.data.cached", True),
        ("from bliss.protocols import PsfAndSky", "bliss.simulator.conditions", False),
        ("from bliss.surveys import ParametricSurvey", "bliss.simulator.simulate", True),
        ("from bliss.surveys.psfex import PsfexPsf", "bliss.simulator.simulate", True),
        ("from bliss.simulator._stamps import frequencies", "bliss.simulator.torch_render", False),
        ("from bliss.encoder.layers import ConvBlock", "bliss.simulator.torch_render", True),
        ("from bliss.data.shards import save_shard", "bliss.simulator.torch_render", True),
        ("from bliss.surveys import ParametricSurvey", "bliss.catalog.io", True),
        (
            "from bliss.surveys.sdss.photoobj import read_photoobj",
            "bliss.evaluate.reference",
            False,
        ),
        ("from bliss.evaluate.plots import plot_delta_mag", "bliss.metrics.reference", True),
        ("from bliss.metrics import match_full_catalogs", "bliss.surveys.sdss.photoobj", True),
        ("from bliss.evaluate.truth import evaluate_files", "bliss.predict.loop", True),
        ("def f():\n    from bliss.evaluate import sep_catalog\n", "bliss.predict.run", True),
        ("from bliss.predict.predictor import Predictor", "bliss.evaluate.truth", False),
        ("from bliss.surveys.fits_reader import read_fits_image", "bliss.predict.loop", True),
        ("from bliss.protocols import Survey", "bliss.predict.loop", False),
        ("from bliss.simulator.render import image_psf", "bliss.surveys.psfex", True),
        ("from bliss.surveys.psfex import PsfexPsf", "bliss.cli.generate", False),
        ("from ..simulator import prior", "bliss.data.cached", True),
        ("from . import shards", "bliss.data", False),
        ("from bliss import encoder", "bliss.metrics.flux", True),
        ("import bliss", "bliss.catalog.tile", True),
        ("import bliss", "bliss.predict.provenance", False),
        ("from bliss.encoder.checkpoint import load_encoder", "bliss.predict.model", False),
        ("from bliss.encoder import Encoder", "bliss.cli.main", False),
        ("from case_studies.x import y", "bliss.cli.main", True),
        ("from tests.conftest import x", "bliss.evaluate.truth", True),
        ("import numpy", "bliss.newpackage.thing", True),
    ],
)
def test_checker_flags_forbidden_edges(source: str, module: str, bad: bool) -> None:
    is_package = module == "bliss.data"
    assert bool(forbidden_edges(source, module, is_package)) == bad


#: modules outside bliss/cli that may use Hydra / OmegaConf, and why
CONFIG_READERS = {
    "bliss": "registers the `len` and `pkg_path` resolvers the config files use",
    "bliss.encoder.checkpoint": "rebuilds an encoder from the config recorded in its checkpoint",
}


def test_only_the_cli_reads_configs() -> None:
    readers = set()
    for path in _bliss_files():
        module = module_name(path)
        targets = imported_modules(path.read_text(), module, path.name == "__init__.py")
        uses_config = any(t.split(".")[0] in ("hydra", "omegaconf") for _, t in targets)
        if uses_config and part_of(module) != "cli":
            readers.add(module)
    assert readers == set(CONFIG_READERS)
