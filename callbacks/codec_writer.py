"""`lit-hpcm predict`: write what `LitHPCM.predict_step` produced as files.

For every predicted image named ``<dir>/<stem>.<ext>`` (its path relative to the input folder)::

    <output_dir>/<dir>/<stem>.hpcm   the compressed file (`lit_hpcm.codec` format; `lit-hpcm decompress` reads it)
    <output_dir>/<dir>/<stem>.png    the image decoded from exactly those bytes (8-bit)

The module compresses (it owns the model); this callback only stores, so the same `predict_step` serves
`trainer.predict(...)` from Python (its return values) and the CLI (these files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.callbacks import BasePredictionWriter

from lit_hpcm.data.images import save_image
from lit_hpcm.files import write_atomically


class CodecWriter(BasePredictionWriter):
    """Stores each predicted image as ``<stem>.hpcm`` + decoded ``<stem>.png`` under `output_dir`.

    Expects `predict_step` to return, per batch, a list of ``{"name": str, "data": bytes, "image": PIL.Image}``.
    Two inputs that would write the same output names (``a.png`` and ``a.jpg``) are an error, not an overwrite.

    Args:
        output_dir: folder for the outputs (created if missing).
    """

    def __init__(self, output_dir: str = "predictions"):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._written: set[Path] = set()
        self._bytes = 0
        self._pixels = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        """Forget the previous run's outputs (a writer may serve several predict calls)."""
        self._written, self._bytes, self._pixels = set(), 0, 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction: list[dict[str, Any]], batch_indices: Optional[list[int]],
        batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:
        """Store the batch's images as they arrive, so a long run keeps what it has done if stopped."""
        for item in prediction:
            stem = self.output_dir / Path(item["name"]).with_suffix("")
            if stem in self._written:
                raise ValueError(f"predict: two input images map to the same outputs {stem}.hpcm/.png; rename one")
            self._written.add(stem)
            data = item["data"]
            write_atomically(stem.with_name(stem.name + ".hpcm"), lambda handle: handle.write(data))
            save_image(item["image"], stem.with_name(stem.name + ".png"))
            self._bytes += len(data)
            self._pixels += item["image"].width * item["image"].height

    def on_predict_end(self, trainer, pl_module) -> None:
        """One summary line: how many images, where, and their total rate."""
        if self._written and trainer.is_global_zero:
            # plain print: the progress bar's print (LightningModule.print) is lost once the bar has closed
            print(
                f"lit-hpcm predict: {len(self._written)} images -> {self.output_dir} (.hpcm + decoded .png), "
                f"{self._bytes} bytes, {8 * self._bytes / self._pixels:.4f} bpp over all pixels"
            )
