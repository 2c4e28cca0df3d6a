"""ScaleEarlyStopping driven by scripted metrics through its hooks, with a fake trainer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lit_hpcm.callbacks import ScaleEarlyStopping

SETTINGS = dict(patience=3, min_patience=2, max_patience=5, fast_threshold=0.1, slow_threshold=0.01)
# Monitor "a": gains 20 %, 19 %, 0.8 % (all new bests), then worse twice: patience 3 4 5 4 3 2, stops at epoch 5.
A = [10.0, 8.0, 6.5, 6.45, 6.5, 6.5]
A_PATIENCE = [3, 4, 5, 4, 3, 2]
A_WAIT = [0, 0, 0, 0, 1, 2]


class FakeTrainer(SimpleNamespace):
    """What ScaleEarlyStopping reads and calls on a Trainer; saved checkpoints are files naming the epoch."""

    def __init__(self):
        super().__init__(current_epoch=0, sanity_checking=False, state=SimpleNamespace(fn="fit"), callback_metrics={},
                         is_global_zero=True, should_stop=False,
                         strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision))

    def save_checkpoint(self, path, weights_only=None):
        # asked for outright: left unset, Lightning logs "`weights_only` was not set" on every save
        assert weights_only is False
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(self.current_epoch))


def validate(callback, trainer, epoch, **metrics):
    trainer.current_epoch = epoch
    trainer.callback_metrics = {name.replace("_", "/", 1): torch.tensor(v, dtype=torch.float64) for name, v in metrics.items()}
    callback.on_validation_end(trainer, None)


def test_adaptive_patience_and_stop_epoch_of_one_monitor(tmp_path):
    callback = ScaleEarlyStopping(tmp_path, monitors=["val/a"], **SETTINGS)
    trainer = FakeTrainer()
    for epoch, value in enumerate(A):
        assert not trainer.should_stop
        validate(callback, trainer, epoch, val_a=value)
    state = callback.states["val/a"]
    assert [h["patience"] for h in state.history] == A_PATIENCE
    assert [h["wait"] for h in state.history] == A_WAIT
    assert (state.best, state.best_epoch, state.stopped_epoch) == (6.45, 3, 5)
    assert trainer.should_stop
    assert (tmp_path / "best-val_a.ckpt").read_text() == "3"


def test_training_stops_when_the_last_monitor_stops_and_a_stopped_one_is_no_longer_read(tmp_path):
    monitors = {"val/a": {}, "val/b": {"mode": "max", "patience": 2, "min_patience": 1, "max_patience": 9}}
    callback = ScaleEarlyStopping(tmp_path, monitors=monitors, **SETTINGS)
    trainer = FakeTrainer()
    b = [1.0, 1.2, 1.44, 1.728, 2.0736, 2.0736, 2.0736, 2.0736]  # +20 % four times (new bests), then flat
    for epoch, value in enumerate(b):
        metrics = {"val_b": value} | ({"val_a": A[epoch]} if epoch < len(A) else {})  # "a" gone after it stopped
        validate(callback, trainer, epoch, **metrics)
        assert trainer.should_stop == (epoch == 7), epoch
    assert callback.states["val/a"].stopped_epoch == 5
    b_state = callback.states["val/b"]
    assert [h["patience"] for h in b_state.history] == [2, 3, 4, 5, 6, 5, 4, 3]
    assert (b_state.best_epoch, b_state.stopped_epoch, b_state.wait) == (4, 7, 3)


def test_sanity_check_and_missing_metrics(tmp_path):
    callback = ScaleEarlyStopping(tmp_path, monitors=["val/a"])
    trainer = FakeTrainer()
    trainer.sanity_checking = True
    callback.on_validation_end(trainer, None)
    assert callback.states["val/a"].history == []
    trainer.sanity_checking = False
    with pytest.raises(ValueError, match="val/a"):
        callback.on_validation_end(trainer, None)


def test_state_round_trip_resumes_exactly(tmp_path):
    trainer = FakeTrainer()
    first = ScaleEarlyStopping(tmp_path, monitors=["val/a"], **SETTINGS)
    for epoch in range(3):
        validate(first, trainer, epoch, val_a=A[epoch])
    resumed = ScaleEarlyStopping(tmp_path, monitors=["val/a"], **SETTINGS)
    resumed.load_state_dict(first.state_dict())
    for epoch in range(3, len(A)):
        validate(resumed, trainer, epoch, val_a=A[epoch])
    assert [h["patience"] for h in resumed.states["val/a"].history] == A_PATIENCE
    assert trainer.should_stop


def test_outputs_at_train_end(tmp_path):
    callback = ScaleEarlyStopping(tmp_path / "es", monitors=["val/a", "val/b"], **SETTINGS)
    trainer = FakeTrainer()
    for epoch, value in enumerate(A):
        validate(callback, trainer, epoch, val_a=value, val_b=1.0)
    callback.on_train_end(trainer, None)
    report = json.loads((tmp_path / "es" / "early_stopping.json").read_text())
    assert set(report) == {"val/a", "val/b"}
    assert report["val/a"]["best_epoch"] == 3 and report["val/a"]["stopped_epoch"] == 5
    assert [h["value"] for h in report["val/a"]["history"]] == A
    assert report["val/b"]["checkpoint"].endswith("best-val_b.ckpt")
    assert (tmp_path / "es" / "early_stopping.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(monitors={"val/a": {"paitence": 3}}), "unknown settings"),
        (dict(monitors=[]), "at least one monitor"),
        (dict(min_patience=5, patience=3), "min_patience <= patience"),
        (dict(mode="up"), "mode"),
        (dict(fast_threshold=0.001, slow_threshold=0.01), "slow_threshold"),
    ],
)
def test_bad_settings_are_rejected(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        ScaleEarlyStopping(tmp_path, **options)


def test_two_instances_keep_separate_states_in_a_checkpoint():
    first, second = ScaleEarlyStopping(monitors=["val/bpp_s1"]), ScaleEarlyStopping(monitors=["val/loss"])
    assert first.state_key != second.state_key
    assert first.state_key == ScaleEarlyStopping(monitors=["val/bpp_s1"]).state_key
