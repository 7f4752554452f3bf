"""The documentation site builds with warnings as errors: every page, link and API docstring."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip(
        "mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for page in ("index.html", "tutorial/index.html", "api/catalog/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # the API pages hold the rendered docstrings, not just the `::: module` line
    catalog_page = (tmp_path / "site" / "api" / "catalog" / "index.html").read_text()
    assert "FullCatalog" in catalog_page and ":::" not in catalog_page
