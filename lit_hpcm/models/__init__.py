"""HPCM network, its presets and coding schedule, our weights files and the import of official ones."""

import warnings

with warnings.catch_warnings():
    # CompressAI's package import pulls in torch_geometric, which calls the deprecated torch.jit.script at import
    # time: a warning about neither package's use here, shown on every run. Only that message, only this import.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import compressai  # noqa: F401

from .hpcm import HPCM, PARAMETER_GROUPS
from .official import import_official, load_official
from .presets import PRESETS, HPCMConfig
from .weights import load_model, load_weights, read_weights, save_weights

__all__ = ["HPCM", "HPCMConfig", "PRESETS", "PARAMETER_GROUPS", "import_official", "load_model", "load_official",
           "load_weights", "read_weights", "save_weights"]
