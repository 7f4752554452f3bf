"""Inference: images of any size -> posterior catalogs and their files. Never imports evaluate."""

from bliss.predict.cataloging import predict_file
from bliss.predict.inputs import PredictInput, resolve_inputs
from bliss.predict.loop import InputCataloger, predict_inputs
from bliss.predict.model import model_conditions
from bliss.predict.predictor import Predictor, PredictorSettings, build_predictor
from bliss.predict.provenance import table_meta

__all__ = [
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
