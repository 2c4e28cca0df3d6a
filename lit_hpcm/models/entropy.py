"""Generalized-Gaussian conditional entropy model on top of CompressAI's `GaussianConditional`.

Only the standardized distribution changes (shape β = 1.5 instead of the Gaussian's 2): CompressAI
keeps doing the rest — scale lower bound, likelihood lower bound, the quantized CDF tables built by
`update()`, and the rANS coder that reads them.
"""

from __future__ import annotations

import math

import scipy.stats
import torch
from compressai.entropy_models import GaussianConditional

# Buffers whose size is set by update(): the quantized CDFs, their offsets and lengths, and the scale table.
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

# Official HPCM coding table: 60 log-spaced scales in [0.12, 64].
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.12, 64.0, 60


def official_scale_table() -> torch.Tensor:
    """[60] scales exp(linspace(log 0.12, log 64, 60)), the table used by the official test."""
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


class _StandardGeneralizedGaussianCDF(torch.autograd.Function):
    """CDF of the unit-scale generalized Gaussian: ½ + ½·sign(v)·P(1/β, |v|^β).

    P is the regularized lower incomplete gamma function; the lower tail is evaluated as ½·Q(1/β, |v|^β)
    with Q = 1 − P computed directly, so small probabilities keep their precision (the role erfc
    plays for the Gaussian). Its gradient with respect to v is the
    density β / (2Γ(1/β)) · exp(−|v|^β), written out because autograd has no derivative of
    `gammainc` in its first argument and the chain through |v|^β is ill-conditioned at 0.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        powered = values.abs().pow(beta)
        ctx.save_for_backward(powered, beta)
        lower_tail = 0.5 * torch.special.gammaincc(1.0 / beta, powered)
        return torch.where(values < 0, lower_tail, 1.0 - lower_tail)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        powered, beta = ctx.saved_tensors
        density = torch.exp(-powered - torch.special.gammaln(1.0 / beta)) * beta / 2
        return grad_output * density, None


class GeneralizedGaussianConditional(GaussianConditional):
    """`GaussianConditional` with a generalized-Gaussian (shape β) standardized distribution.

    The likelihood of a value v (already centred on its mean) with scale α is
    F((|v| + ½)/α) − F((|v| − ½)/α) computed on the symmetric side, as CompressAI does; it is always
    evaluated in float32, whatever the autocast dtype, so rates stay exact under bf16 training.
    """

    def __init__(
        self,
        scale_table=None,
        beta: float = 1.5,
        scale_bound: float = SCALE_MIN,
        tail_mass: float = 1e-6,
        likelihood_bound: float = 1e-9,
    ):
        super().__init__(scale_table, scale_bound=scale_bound, tail_mass=tail_mass, likelihood_bound=likelihood_bound)
        self.register_buffer("beta", torch.tensor([float(beta)]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Take the CDF tables' sizes from `state_dict`: they depend on the scale table `update()` was given, so a
        fresh model's (empty) tables are resized to the loaded ones, as CompressAI's `CompressionModel` does."""
        for name in CDF_BUFFERS:
            loaded = state_dict.get(prefix + name)
            if isinstance(loaded, torch.Tensor) and loaded.shape != self._buffers[name].shape:
                self._buffers[name] = self._buffers[name].new_empty(loaded.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _standardized_cumulative(self, inputs: torch.Tensor) -> torch.Tensor:
        return _StandardGeneralizedGaussianCDF.apply(inputs, self.beta.to(inputs))

    def _standardized_quantile(self, quantile):
        return scipy.stats.gennorm.ppf(quantile, float(self.beta))

    def likelihood(self, values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """Bounded likelihood of centred values [...] under scales [...] (same shape), float32."""
        with torch.autocast(values.device.type, enabled=False):
            lik = self._likelihood(values.float(), scales.float())
            return self.likelihood_lower_bound(lik)

    def update(self) -> None:
        """Build the quantized CDF tables from `scale_table`, on the CPU in float64, whatever the module's device.

        CompressAI builds them on the buffers' device in float32, so a table built on a GPU (test, predict) and
        one built on the CPU (compress, decompress, eval) could differ in a few entries, and a file would then
        decode with other tables than it was coded with. Built here one way, they depend on the scales only,
        which the model fingerprint covers. The buffers are then moved to the module's device:
        `_quantized_cdf` [S, max_length + 2] int32, `_offset` and `_cdf_length` [S] int32.
        """
        device = self.scale_table.device
        scales = self.scale_table.detach().to("cpu", torch.float64)
        pmf_center = torch.ceil(scales * -self._standardized_quantile(self.tail_mass / 2)).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(pmf_length.max())
        samples = (torch.arange(max_length, dtype=torch.int32) - pmf_center[:, None]).abs().double()
        upper = self._standardized_cumulative((0.5 - samples) / scales[:, None])
        lower = self._standardized_cumulative((-0.5 - samples) / scales[:, None])
        cdf = self._pmf_to_cdf(upper - lower, 2 * lower[:, :1], pmf_length, max_length)
        self._quantized_cdf = cdf.to(device)
        self._offset = (-pmf_center).to(device)
        self._cdf_length = (pmf_length + 2).to(device)

    def table(self) -> tuple[list, list, list]:
        """CDF tables as the rANS coder wants them: (quantized cdfs, lengths, offsets)."""
        self._check_cdf_size()
        return (
            self._quantized_cdf.tolist(),
            self._cdf_length.reshape(-1).int().tolist(),
            self._offset.reshape(-1).int().tolist(),
        )
