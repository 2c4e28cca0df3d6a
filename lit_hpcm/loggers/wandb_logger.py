"""Lightning's WandbLogger without a warning on every run, writing into the run folder.

Lightning hands ``anonymous=None`` to ``wandb.init`` when the setting is not given, and W&B (0.19 on) warns
"The anonymous setting has no effect" whenever the setting is passed at all. This logger passes it only when
the user sets it, so a run prints W&B's own lines and nothing about a setting nobody chose. Its ``save_dir``
defaults to None, which the `lit-hpcm` CLI makes the trainer's ``default_root_dir``: the offline run lands in
``<default_root_dir>/wandb/offline-run-*``, beside the run's other outputs, not in the working folder.
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """`lightning.pytorch.loggers.WandbLogger`, same arguments; ``anonymous`` reaches W&B only when set;
    ``save_dir`` None: the run folder under the CLI (W&B's own default, the working folder, from Python)."""

    def __init__(self, *args: Any, save_dir: Optional[str] = None, anonymous: Optional[bool] = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, save_dir=save_dir, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)
