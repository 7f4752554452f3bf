"""Inference: images of any size -> posterior catalogs and their files. Never imports evaluate.

The many-input loop (``InputCataloger``, ``predict_inputs``) runs on Lightning, which takes
seconds to import; it is loaded on first use, so cataloging one image starts without it.
"""

import importlib
from typing import Any

from bliss.predict.cataloging import predict_file
from bliss.predict.density import DensitySettings
from bliss.predict.inputs import PredictInput, resolve_inputs
from bliss.predict.model import model_conditions
from bliss.predict.predictor import Predictor, PredictorSettings, build_predictor
from bliss.predict.provenance import table_meta

__all__ = [
    "DensitySettings",
    "InputCataloger",
    "PredictInput",
    "Predictor",
    "PredictorSettings",
    "build_predictor",
    "model_conditions",
    "predict_file",
    "predict_inputs",
    "resolve_inputs",
    "table_meta",
]

#: names imported on first use, and their modules
_LAZY = {"InputCataloger": "bliss.predict.loop", "predict_inputs": "bliss.predict.loop"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bliss.predict' has no attribute {name!r}")
