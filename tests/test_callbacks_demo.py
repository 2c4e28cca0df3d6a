"""The callbacks demo (`configs/demo_callbacks.yaml`) trains a real codec: at its end y carries most of the bits,
so ScaleEarlyStopping's per-scale monitors watch real rates, not the noise of a collapsed latent."""

from __future__ import annotations

import csv

from lit_hpcm.cli import main


def test_callbacks_demo_keeps_the_bits_in_y(tmp_path):
    out = tmp_path / "demo_callbacks"
    assert main(["fit", "-c", "configs/demo_callbacks.yaml", f"--trainer.default_root_dir={out}",
                 "--trainer.enable_progress_bar=false"]) == 0
    rows = list(csv.DictReader(open(out / "logs" / "version_0" / "metrics.csv")))
    last = [r for r in rows if r.get("val/bpp")][-1]
    scales = [float(last[f"val/bpp_{s}"]) for s in ("s1", "s2", "s3")]
    assert sum(scales) > 0.5 * float(last["val/bpp"])
    assert min(scales) > 1e-3  # every scale carries real bits (a collapsed y had 1e-6 .. 1e-5 bpp per scale)
