"""A griffe extension for the API pages: read bliss's Sphinx-flavoured docstrings as Markdown.

Two habits of the bliss docstrings that griffe's Google parser does not know:

* doctests headed ``Example:``. Google style allows the singular (so do ruff's pydocstyle
  rules), but griffe only knows ``Examples:`` and would render the section as Markdown, where
  ``>>>`` lines become nested quotes and doctest output such as ``x[0][1]`` reads as a link;
* cross-references written as Sphinx roles (``:func:`~bliss.metrics.match_catalogs```), which
  Markdown would show verbatim. They become code spans, with the short name where the role
  has ``~``.

mkdocs.yml loads this file through the ``extensions`` option of mkdocstrings' python handler.
"""

from __future__ import annotations  # the annotations name griffe types that older griffe lacks

import ast
import re
from typing import Any

import griffe

__all__ = ["BlissDocstrings"]

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")


def _code_span(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class BlissDocstrings(griffe.Extension):
    """Rewrite each docstring before it is parsed: ``Examples:`` headers, roles as code."""

    def on_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        obj: griffe.Object,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        """Rewrite the docstring of every object griffe creates (modules, classes, functions)."""
        if obj.docstring is not None:
            value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_code_span, value)
