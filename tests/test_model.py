"""HPCM model: outputs, per-scale bits, schedule, padding, codec round trip (tiny preset, CPU)."""

from __future__ import annotations

import pytest
import torch

from lit_hpcm.models import HPCM
from lit_hpcm.models.masks import LatentLayout
from lit_hpcm.models.schedule import SCALES, STEPS


def test_schedule_has_eleven_steps_split_2_3_6_and_covers_every_part_once():
    per_scale = {s: [st.part for st in STEPS if st.scale == s] for s in SCALES}
    assert [len(per_scale[s]) for s in ("s1", "s2", "s3")] == [2, 3, 6]
    # a finer scale codes exactly the parts its coarser scales did not cover
    assert per_scale["s1"] == [0, 1] and per_scale["s2"] == [1, 2, 3] and per_scale["s3"] == [2, 3, 4, 5, 6, 7]
    assert [st.context for st in STEPS] == [None] + list(range(10))


@pytest.mark.parametrize("size", [(4, 4), (8, 12), (16, 16)])
def test_layout_parts_partition_each_grid_and_levels_match_scales(size):
    layout = LatentLayout(16, *size)
    for scale, masks in layout.parts.items():
        assert torch.equal(masks.sum(0), torch.ones_like(masks[0])), scale
    cells = 16 * size[0] * size[1]
    counts = [int((layout.level == k).sum()) for k in (1, 2, 3)]
    assert counts == [cells // 16, 3 * cells // 16, 12 * cells // 16]


def test_upsample_places_a_grid_back_where_it_was_taken():
    layout = LatentLayout(16, 8, 8)
    y = torch.randn(2, 16, 8, 8)
    s1 = layout.grid_of("s1", y)
    back = layout.upsample("s2", layout.upsample("s1", s1))
    on_s1 = layout.level == 1
    assert torch.equal(back[:, on_s1], y[:, on_s1])
    assert torch.count_nonzero(back[:, ~on_s1]) == 0


@pytest.mark.parametrize("training", [True, False])
def test_forward_outputs_and_bits_partition_the_total(training):
    torch.manual_seed(0)
    model = HPCM("tiny").train(training)
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, 32, 4, 4)
    assert out["likelihoods"]["z"].shape == (2, 32, 1, 1)
    assert set(out["bits"]) == {"z", "s1", "s2", "s3"}
    total = -torch.log2(out["likelihoods"]["y"]).flatten(1).sum(1) - torch.log2(out["likelihoods"]["z"]).flatten(1).sum(1)
    parts = sum(out["bits"].values())
    assert torch.allclose(parts, total, rtol=1e-5)
    assert all(float(b.min()) > 0 for b in out["bits"].values())


def test_train_step_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = HPCM("tiny").train()
    out = model(torch.rand(2, 3, 64, 64))
    loss = (out["x_hat"] - 0.5).pow(2).mean() + sum(b.sum() for b in out["bits"].values()) / 1e4
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_parameter_groups_partition_the_model():
    model = HPCM("tiny")
    groups = model.parameter_groups()
    assert list(groups) == ["g_a", "g_s", "h_a", "h_s", "context", "entropy"]
    names = [n for members in groups.values() for n, _ in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert {n for n, _ in groups["entropy"]} == {"hyperprior.means", "hyperprior.scales"}


def test_every_learned_tensor_is_registered_and_follows_dtype_moves():
    model = HPCM("tiny").double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert sum(p.numel() for p in model.context.multipliers) == 10 * 96


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (64, 64), (70, 130)])
def test_any_size_is_padded_and_cropped_back(tiny_model, size):
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        assert tiny_model(x)["x_hat"].shape == x.shape


@pytest.mark.parametrize("size", [(1, 1), (50, 70), (64, 128)])
def test_decompress_reproduces_the_eval_forward_exactly(tiny_model, size):
    torch.manual_seed(1)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected = tiny_model(x)["x_hat"].clamp(0, 1)
    encoded = tiny_model.compress(x)
    assert len(encoded["strings"]) == 2 and len(encoded["strings"][0]) == 2
    decoded = tiny_model.decompress(encoded["strings"], encoded["shape"])
    assert torch.equal(decoded["x_hat"], expected)
    assert decoded["symbol_crc"] == encoded["symbol_crc"] and len(encoded["symbol_crc"]) == 2


def test_symbol_crcs_are_per_image_and_follow_the_coded_symbols(coding_model):
    torch.manual_seed(1)
    x = torch.rand(3, 3, 48, 64)
    encoded = coding_model.compress(x)
    assert len(set(encoded["symbol_crc"])) == 3  # three images, three different symbol sequences
    assert coding_model.decompress(encoded["strings"], encoded["shape"])["symbol_crc"] == encoded["symbol_crc"]
    swapped = [encoded["strings"][0][::-1], encoded["strings"][1][::-1]]  # the images in reverse order
    assert coding_model.decompress(swapped, encoded["shape"])["symbol_crc"] == encoded["symbol_crc"][::-1]


def test_a_cut_z_string_decodes_the_same_way_every_time(tiny_model):
    """CompressAI's rANS decoder reads a damaged stream past its end; the zero padding keeps those reads repeatable
    (unpadded, this cut string decoded to another z_hat on later calls)."""
    torch.manual_seed(0)
    z = torch.randn(1, tiny_model.config.hyper_channels, 8, 8) * 20  # far out: bypass-coded values
    (string,), _ = tiny_model.hyperprior.compress(z)
    cut = [string[: len(string) // 2]]
    first = tiny_model.hyperprior.decompress(cut, (8, 8))
    assert all(torch.equal(tiny_model.hyperprior.decompress(cut, (8, 8)), first) for _ in range(3))


def test_cdf_tables_survive_state_dict_round_trip(tiny_model):
    x = torch.rand(1, 3, 64, 64)
    encoded = tiny_model.compress(x)
    fresh = HPCM("tiny").eval()
    fresh.load_state_dict(tiny_model.state_dict())  # resizes the empty CDF buffers before loading
    again = fresh.compress(x)
    assert again["strings"] == encoded["strings"]
    assert torch.equal(fresh.decompress(again["strings"], again["shape"])["x_hat"],
                       tiny_model.decompress(encoded["strings"], encoded["shape"])["x_hat"])


def test_cdf_tables_are_resized_on_load_inside_another_module_too(tiny_model):
    """The resizing lives in the entropy model, so a model loaded as part of a larger one (a LightningModule's
    state dict) gets the loaded tables, not an error about their sizes."""
    fresh = torch.nn.ModuleDict({"model": HPCM("tiny")})
    fresh.load_state_dict({f"model.{k}": v for k, v in tiny_model.state_dict().items()})
    for name in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"):
        assert torch.equal(getattr(fresh["model"].y_entropy, name), getattr(tiny_model.y_entropy, name))
        assert torch.equal(getattr(fresh["model"].hyperprior.entropy, name),
                           getattr(tiny_model.hyperprior.entropy, name))


def test_compress_without_update_is_a_clear_error():
    model = HPCM("tiny").eval()
    with pytest.raises(ValueError, match="update"):
        model.compress(torch.rand(1, 3, 64, 64))


def test_unknown_preset_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown HPCM preset"):
        HPCM("huge")
    with pytest.raises(ValueError, match="unknown HPCM option"):
        HPCM("tiny", widths=3)


def test_non_rgb_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_model(torch.rand(1, 1, 64, 64))


def test_residual_blocks_in_place_activation_gives_the_out_of_place_values_and_gradients():
    import torch.nn.functional as F

    from lit_hpcm.models.layers import DWConvRB, PConvRB

    for block in (PConvRB(16), DWConvRB(16)):
        x = torch.randn(2, 16, 8, 8, requires_grad=True, generator=torch.Generator().manual_seed(0))
        reference = x + block.project(F.leaky_relu(block.expand(block.spatial(x))))
        (ref_grad,) = torch.autograd.grad(reference.square().sum(), x)
        out = block(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        assert torch.equal(out, reference) and torch.equal(grad, ref_grad)


def _input_layouts(model: HPCM, x: torch.Tensor) -> dict[str, bool]:
    """Run model(x); per image transform, whether its input was NHWC (channels-last)."""
    seen = {}

    def record(name):
        def hook(module, args):
            seen[name] = args[0].is_contiguous(memory_format=torch.channels_last)
        return hook

    hooks = [getattr(model, name).register_forward_pre_hook(record(name)) for name in ("g_a", "g_s")]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_cpu_eval_runs_the_image_transforms_in_nhwc_and_training_in_nchw(tiny_model):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert _input_layouts(tiny_model, x) == {"g_a": True, "g_s": True}
    tiny_model.train()
    try:
        assert _input_layouts(tiny_model, x) == {"g_a": False, "g_s": False}
    finally:
        tiny_model.eval()


def test_nhwc_transforms_give_the_nchw_values_within_float_rounding(tiny_model):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y_nchw = tiny_model.g_a(x)
        y = tiny_model._transform(tiny_model.g_a, x)
        x_hat_nchw = tiny_model.g_s(y_nchw)
        x_hat = tiny_model._transform(tiny_model.g_s, y_nchw)
    assert y.is_contiguous() and x_hat.is_contiguous()  # handed on in the layout they came in
    torch.testing.assert_close(y, y_nchw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_hat, x_hat_nchw, rtol=1e-5, atol=1e-5)


def test_the_state_after_the_last_step_is_not_computed(tiny_model):
    calls = []
    hooks = [cell.register_forward_hook(lambda *_: calls.append(1)) for cell in tiny_model.context.attention.values()]
    try:
        with torch.no_grad():
            tiny_model(torch.rand(1, 3, 64, 64))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(calls) == sum(step.context is not None for step in STEPS) - 1
