"""Sweeps: grid files expanded into commands (`grid`), the runs they leave on disk (`runs`, `wandb_log`), and
the report that ranks them (`report`)."""
