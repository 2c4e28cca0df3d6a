"""Errors a user can fix from the command line; the CLI prints them as one line (exit code 2), no traceback."""


class ConfigError(ValueError):
    """A configuration value that cannot work (a negative λ, a missing folder, conflicting options): raised when
    the model or data module is built, before anything is written."""
