"""Regenerate the tables of docs/columns.md from bliss/catalog/columns.py: ``python docs/_ext/columns.py``.

tests/unit/catalog/test_columns.py fails while the page and the reference differ.
"""

from pathlib import Path

from bliss.catalog.columns import update_markdown

PAGE = Path(__file__).parents[1] / "columns.md"

if __name__ == "__main__":
    PAGE.write_text(update_markdown(PAGE.read_text()))
    print(f"updated {PAGE}")
