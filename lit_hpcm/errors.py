"""Errors a user can fix from the command line; the CLI prints them as one line (exit code 2), no traceback."""


class ConfigError(ValueError):
    """A configuration value that cannot work (a negative λ, a missing folder, conflicting options): raised when
    the model or data module is built, before anything is written."""


class TrainingStopped(RuntimeError):
    """A fit that cannot recover (its weights are no longer finite, or too many steps in a row were skipped as
    non-finite): stopped from inside the training step on every rank alike, nothing saved after it (the
    checkpoints written before are kept); the CLI prints it as one line (exit code 2)."""


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used: missing, unreadable, or not fitting the requested network.
    The message names the file (where there is one) and every problem found."""
