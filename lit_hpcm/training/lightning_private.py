"""Every use of Lightning's private API, in one place: what it is, why no public path does it, and the version it
was checked against (lightning 2.6.6, the newest the pin in pyproject.toml allows). A Lightning upgrade checks
these names first; the tests that fail when one of them changes are named with each.
"""

from __future__ import annotations

CHECKED_AGAINST = "2.6.6"


def attached_trainer(module):
    """The trainer `module` (a LightningModule) is attached to, or None: ``LightningModule._trainer``.

    The public ``module.trainer`` raises when there is none, and LitHPCM runs outside a trainer too (built for a
    test, loaded to compress). Tests: every test that builds a LitHPCM without a trainer (test_module)."""
    return module._trainer


def logged_batches(trainer) -> int:
    """The step the loggers count: ``fit_loop.epoch_loop._batches_that_stepped``.

    Lightning has no public counter of the batches that stepped the logger (``global_step`` counts optimizer
    steps, which under manual optimization with skipped steps is another number). Tests: test_logging's and
    test_resume_cli's byte-identical resumed metrics.csv."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_logged_batches(trainer, value: int) -> None:
    """Put back the logging step a checkpoint recorded (see `LitHPCM._restore_logging_step`): Lightning restores
    ``_batches_that_stepped`` assuming the checkpoint was written inside ``on_train_batch_end``, which is one
    step off for a checkpoint written at an epoch's end, and offers no public setter."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = value


class ConfigOverCheckpointHyperparameters:
    """LightningCLI mixin: the config and the command line win over the hyper-parameters saved in ``--ckpt_path``.

    ``LightningCLI._parse_ckpt_path`` (called from ``__init__`` right after the arguments are parsed, with no
    switch to turn it off) merges the checkpoint's saved hyper-parameters over the config, so a checkpoint
    silently overrides what the user asked (another ``test_results``, another ``balancing``). Overriding it with
    a no-op is the only way; the checkpoint is checked instead in ``HPCMCLI.before_instantiate_classes``.
    Test: test_ckpt_path."""

    def _parse_ckpt_path(self) -> None:
        """Nothing: the checkpoint's hyper-parameters are not merged (see the class)."""
