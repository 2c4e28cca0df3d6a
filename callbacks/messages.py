"""How the callbacks say something: a line of its own, not text glued to the end of a progress-bar line."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info


def say(trainer: pl.Trainer, message: str) -> None:
    """`message` from rank zero on its own line: through the progress bar when one is shown (it clears the bar's
    line, writes the message, then redraws the bar), else as Lightning's INFO line."""
    bar = getattr(trainer, "progress_bar_callback", None)
    if bar is None or not bar.is_enabled:
        rank_zero_info(message)
    elif trainer.is_global_zero:
        bar.print(message)
