"""Loggers of a run folder: the CSV log a resumed fit continues, and W&B writing into the run folder."""

from .csv_logger import RunCSVLogger
from .wandb_logger import WandbLogger

__all__ = ["RunCSVLogger", "WandbLogger"]
