"""The commands `lit-hpcm` hands to LightningCLI (the rest are its own tools, `lit_hpcm.cli.main`)."""

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
