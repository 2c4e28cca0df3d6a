"""Official checkpoint import: prefixes, old releases without channel multipliers, clear errors."""

from __future__ import annotations

import pytest
import torch

from lit_hpcm.cli import main
from lit_hpcm.errors import CheckpointError
from lit_hpcm.models import HPCM, load_model, load_weights, save_weights
from lit_hpcm.models.official import import_official, official_name


def _official_tiny() -> dict[str, torch.Tensor]:
    """A tiny HPCM's weights under official names (the tiny preset has the official topology)."""
    torch.manual_seed(0)
    model = HPCM("tiny")
    return {official_name(k): v for k, v in model.state_dict().items() if official_name(k)}, model


def test_import_round_trips_official_names_with_module_prefix_and_wrapping():
    official, model = _official_tiny()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in official.items()}}
    ours = import_official(wrapped, "tiny")
    for key, value in ours.items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_older_release_without_channel_multipliers_gets_ones():
    official, _ = _official_tiny()
    old = {k: v for k, v in official.items() if not k.startswith("adaptive_params_list")}
    ours = import_official(old, "tiny")
    assert all(torch.equal(ours[f"context.multipliers.{i}"], torch.ones(1, 96, 1, 1)) for i in range(10))


def test_official_adaptor_quirk_is_kept():
    # the first context step of s2 uses official adaptor 2 ((k - 1) mod 3 with k = 0), of s3 adaptor 5
    assert official_name("context.adaptors.1.weight") == "y_spatial_prior_adaptor_list_s2.2.weight"
    assert official_name("context.adaptors.4.weight") == "y_spatial_prior_adaptor_list_s3.5.weight"
    assert official_name("context.adaptors.5.weight") == "y_spatial_prior_adaptor_list_s3.0.weight"


def test_missing_unknown_and_misshapen_keys_are_named_in_one_error():
    official, _ = _official_tiny()
    broken = dict(official)
    del broken["g_a.branch.0.weight"]
    broken["extra.weight"] = torch.zeros(1)
    broken["means_hyper"] = torch.zeros(1, 7, 1, 1)
    with pytest.raises(CheckpointError) as err:
        import_official(broken, "tiny")
    message = str(err.value)
    assert "missing g_a.branch.0.weight" in message and "unknown key extra.weight" in message
    assert "shape of means_hyper" in message


def test_import_official_command_writes_a_file_the_system_loads(tmp_path):
    official, model = _official_tiny()
    torch.save(official, tmp_path / "official.pth.tar")
    assert main(["import-official", str(tmp_path / "official.pth.tar"), str(tmp_path / "ours.pt"), "--preset", "tiny"]) == 0
    loaded = load_model(tmp_path / "ours.pt")
    assert loaded.preset == "tiny"
    assert torch.equal(loaded.g_a[0].weight, model.g_a[0].weight)
    with pytest.raises(CheckpointError, match="preset 'tiny'"):
        load_weights(tmp_path / "ours.pt", "base")


def test_corrupt_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: not a readable PyTorch checkpoint"):
        load_weights(tmp_path / "bad.pt", "tiny")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_weights(tmp_path / "nope.pt", "tiny")


def test_truncated_weights_file_is_a_clear_error_naming_it(tmp_path):
    _, model = _official_tiny()
    data = save_weights(model.state_dict(), "tiny", tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable PyTorch checkpoint \(corrupt, truncated"):
        load_model(tmp_path / "cut.pt")


def test_weights_and_official_files_that_do_not_fit_name_the_file(tmp_path):
    official, model = _official_tiny()
    state = dict(model.state_dict())
    del state["g_a.0.weight"]
    state["g_s.0.weight"] = torch.zeros(1)
    save_weights(state, "tiny", tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken\.pt: weights do not fit HPCM preset 'tiny': missing g_a\.0\.w"):
        load_model(tmp_path / "broken.pt")
    torch.save({k: v for k, v in official.items() if k != "g_a.branch.0.weight"}, tmp_path / "official.pth.tar")
    with pytest.raises(CheckpointError, match=r"official\.pth\.tar: official checkpoint does not match HPCM preset 't"):
        load_model(tmp_path / "official.pth.tar", preset="tiny")


def test_import_official_on_a_lit_hpcm_file_says_it_is_already_usable(tmp_path, capsys):
    from lit_hpcm.cli import main
    from lit_hpcm.models import HPCM
    from lit_hpcm.models.weights import save_weights

    weights = save_weights(HPCM("tiny").state_dict(), "tiny", tmp_path / "w.pt")
    assert main(["import-official", str(weights), str(tmp_path / "again.pt"), "--preset", "tiny"]) == 2
    assert "already a lit-hpcm file" in capsys.readouterr().err and not (tmp_path / "again.pt").exists()


def test_export_writes_safetensors_a_user_loads_without_pickle(tmp_path, capsys, single_thread):
    """A Lightning checkpoint of LitHPCM (FAMO state included) -> .safetensors weights: loadable with
    safetensors alone, by every --ckpt option, coding the same bytes; bad inputs are one line."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lit_hpcm import codec
    from lit_hpcm.training.module import LitHPCM

    torch.manual_seed(0)
    module = LitHPCM(preset="tiny", balancing="famo")
    state = module.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # the famo entries too: no nested dict
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.0", "hyper_parameters": {"preset": "tiny"}},
               ckpt)
    out = tmp_path / "model.safetensors"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    assert "safetensors, preset tiny" in capsys.readouterr().out

    tensors = load_file(out)  # no pickle: the safetensors package alone
    with safe_open(out, framework="pt") as handle:
        assert handle.metadata() == {"format": "lit-hpcm-weights", "preset": "tiny"}
    model_keys = {k[len("model."):] for k in state if k.startswith("model.")}
    assert set(tensors) == model_keys and all(torch.equal(tensors[k], state[f"model.{k}"]) for k in tensors)
    image = torch.from_numpy(np.random.default_rng(0).random((3, 40, 56), dtype=np.float32))
    assert codec.encode(load_model(out), image) == codec.encode(load_model(ckpt), image)

    assert main(["export", str(ckpt), "-o", str(out)]) == 2  # exists: needs --force
    assert main(["export", str(out), "-o", str(tmp_path / "again.pt")]) == 0  # safetensors in, torch file out
    assert load_weights(tmp_path / "again.pt", "tiny").keys() == tensors.keys()
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "bad.safetensors"), "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lit-hpcm export: error: ") and "bad.safetensors" in err and err.count("\n") == 1
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="without lit-hpcm metadata"):
        load_model(foreign)
