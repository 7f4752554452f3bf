"""The forward model: a catalog prior, renderers (GalSim, PyTorch) and the noise of a survey.

Names are imported on first use, so that e.g. the PyTorch renderer loads without GalSim.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bliss.simulator.cluster_prior import StarClusterPrior
    from bliss.simulator.conditions import ObservingConditions
    from bliss.simulator.cosmos_population import CosmosPopulation
    from bliss.simulator.field import simple_wcs, write_simulated_field
    from bliss.simulator.noise import NoiseModel
    from bliss.simulator.prior import CatalogPrior
    from bliss.simulator.render import GalsimRenderer
    from bliss.simulator.simulate import ImageSimulator
    from bliss.simulator.template_colors import TemplateColors
    from bliss.simulator.torch_render import TorchRenderer

#: public name -> its module, imported on first use (importing the package stays cheap)
_EXPORTS = {
    "CatalogPrior": "bliss.simulator.prior",
    "CosmosPopulation": "bliss.simulator.cosmos_population",
    "GalsimRenderer": "bliss.simulator.render",
    "ImageSimulator": "bliss.simulator.simulate",
    "NoiseModel": "bliss.simulator.noise",
    "ObservingConditions": "bliss.simulator.conditions",
    "TorchRenderer": "bliss.simulator.torch_render",
    "StarClusterPrior": "bliss.simulator.cluster_prior",
    "TemplateColors": "bliss.simulator.template_colors",
    "simple_wcs": "bliss.simulator.field",
    "write_simulated_field": "bliss.simulator.field",
}
__all__ = [
    "CatalogPrior",
    "CosmosPopulation",
    "GalsimRenderer",
    "ImageSimulator",
    "NoiseModel",
    "ObservingConditions",
    "StarClusterPrior",
    "TemplateColors",
    "TorchRenderer",
    "simple_wcs",
    "write_simulated_field",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
