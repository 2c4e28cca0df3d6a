"""Lightning's WandbLogger without a warning on every run.

Lightning hands ``anonymous=None`` to ``wandb.init`` when the setting is not given, and W&B (0.19 on) warns
"The anonymous setting has no effect" whenever the setting is passed at all. This logger passes it only when
the user sets it, so a run prints W&B's own lines and nothing about a setting nobody chose.
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """`lightning.pytorch.loggers.WandbLogger`, same arguments; ``anonymous`` reaches W&B only when set."""

    def __init__(self, *args: Any, anonymous: Optional[bool] = None, **kwargs: Any) -> None:
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)
