"""docs/tutorial.md runs as written: its code blocks, in order, as in one terminal.

Each ```bash block runs with ``bash -euo pipefail``; exported variables and the working directory
carry over to the next block as they would in one shell. Each ```python block runs in a fresh
interpreter with that environment. Everything happens under ``tmp_path``; the `bliss` and
`python` the blocks call are the ones of this interpreter's environment.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from astropy.table import Table

TUTORIAL = Path(__file__).parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
TIMEOUT_S = 300
CHECKPOINT = "outputs/train/tutorial/checkpoints/last.ckpt"


def tutorial_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each bash or python block, in document order."""
    return [(match[1], match[2]) for match in BLOCK.finditer(text)]


def _read_env(path: Path) -> dict[str, str]:
    entries = path.read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _run_block(language: str, code: str, env: dict[str, str], index: int, tmp_path: Path) -> dict:
    """Run one block; return the environment the next block starts with."""
    script = tmp_path / f"block_{index}.{'sh' if language == 'bash' else 'py'}"
    env_out = tmp_path / f"block_{index}.env"
    if language == "bash":
        # the trailing line records exports and the working directory for the next block
        script.write_text(f'{code}\nenv -0 > "{env_out}"\n')
        command = ["bash", "-euo", "pipefail", str(script)]
    else:
        script.write_text(code)
        command = [sys.executable, str(script)]
    result = subprocess.run(
        command,
        cwd=env["PWD"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"block {index} ({language}) of {TUTORIAL.name} failed:\n{code}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )
    return _read_env(env_out) if language == "bash" else env


@pytest.fixture(scope="module")
def tutorial_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run every block of the tutorial; return its ``BLISS_HOME``."""
    tmp_path = tmp_path_factory.mktemp("tutorial")
    work = tmp_path / "terminal"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLISS_")}
    # the `bliss` and `python` of the environment under test come first on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PWD"] = str(work)
    blocks = tutorial_blocks(TUTORIAL.read_text())
    for mode in ("generate", "train", "predict", "evaluate"):
        assert any(f"mode={mode}" in code for _, code in blocks), mode
    for index, (language, code) in enumerate(blocks):
        env = _run_block(language, code, env, index, tmp_path)
    home = Path(env["BLISS_HOME"])
    assert home.is_relative_to(work), home  # the tutorial writes only under its own folder
    return home


def test_generate_wrote_three_shards(tutorial_home: Path) -> None:
    cached = tutorial_home / "data" / "cached" / "sdss_generalist_80px"
    assert (cached / "manifest.json").is_file()
    assert (cached / "splits.json").is_file()
    assert len(list(cached.glob("shard_*.pt"))) == 3


def test_train_wrote_a_checkpoint_that_took_its_steps(tutorial_home: Path) -> None:
    checkpoint = torch.load(tutorial_home / CHECKPOINT, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 4


def test_predict_wrote_a_catalog_with_sources(tutorial_home: Path) -> None:
    predict = tutorial_home / "outputs" / "predict"
    catalog = Table.read(predict / "sample_catalog.fits")
    assert len(catalog) > 0
    assert {"x", "y", "prob_source", "flux_r"} <= set(catalog.colnames)
    assert (predict / "sample_catalog.png").is_file()


def test_evaluate_wrote_the_scores(tutorial_home: Path) -> None:
    evaluate = tutorial_home / "outputs" / "evaluate"
    for name in ("metrics.csv", "metrics.json", "f1_by_magnitude.png"):
        assert (evaluate / name).is_file(), name
    rows = {
        line.split(",")[0]: line for line in (evaluate / "metrics.csv").read_text().splitlines()
    }
    assert {"metric", "precision", "recall", "f1"} <= rows.keys()
    recall_bliss = float(rows["recall"].split(",")[1])
    assert recall_bliss > 0.3  # a fine-tuned shipped model still finds the sample's sources


def test_blocks_are_found_in_document_order() -> None:
    blocks = tutorial_blocks(
        "text\n```bash\necho 1\n```\n```python\nprint(2)\n```\n```yaml\na: 1\n```\n"
    )
    assert blocks == [("bash", "echo 1\n"), ("python", "print(2)\n")]
