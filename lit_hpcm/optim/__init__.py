"""Optimizers for Balanced R-D training: cautious Adam for the codec, FAMO for the task weights."""

from lit_hpcm.optim.bit_share import BitSharePrior
from lit_hpcm.optim.cautious_adam import CautiousAdam
from lit_hpcm.optim.famo import FAMO
from lit_hpcm.optim.loss_scale import LossScalePrior

__all__ = ["BitSharePrior", "CautiousAdam", "FAMO", "LossScalePrior"]
