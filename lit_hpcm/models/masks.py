"""Official HPCM cell patterns and the static index maps derived from them.

All patterns are 0/1 tiles repeated over a grid; each channel group gets its own tile (the tile
order is permuted across groups). From those masks `LatentLayout` derives, for one latent size,
flat gather indices that move tensors between the three scale grids. Gathers and mask multiplies
keep every shape static (no boolean indexing), which keeps the model autograd-, bf16- and
compile-friendly; the numbers are those of the official raster-order masked_select / index-put.
"""

from __future__ import annotations

import torch

# 4×4 tiles with two cells each, used by the s2 extraction and the 8-part s3 masks.
EIGHT_PART_TILES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 0), (2, 2)),
    ((0, 2), (2, 0)),
    ((1, 1), (3, 3)),
    ((1, 3), (3, 1)),
    ((0, 1), (2, 3)),
    ((0, 3), (2, 1)),
    ((1, 0), (3, 2)),
    ((1, 2), (3, 0)),
)
# The s1 positions seen at full resolution: the first cell of each 4×4 tile above.
S1_TILES: tuple[tuple[tuple[int, int], ...], ...] = tuple((t[0],) for t in EIGHT_PART_TILES)
# 2×2 tiles with one cell each (four-part masks on the s2 grid).
FOUR_PART_TILES: tuple[tuple[tuple[int, int], ...], ...] = (((0, 0),), ((0, 1),), ((1, 0),), ((1, 1),))
# 2×2 checkerboard tiles (two-part masks on the s1 grid).
TWO_PART_TILES: tuple[tuple[tuple[int, int], ...], ...] = (((0, 0), (1, 1)), ((0, 1), (1, 0)))

# Per channel group (8 groups), the two EIGHT_PART_TILES forming that group's s2 sub-grid, and
# the single S1_TILES cell marking its s1 positions at full resolution.
S2_GROUP_TILES: tuple[tuple[int, int], ...] = tuple(zip((0, 2, 4, 6, 1, 3, 5, 7), (1, 3, 5, 7, 0, 2, 4, 6)))
S1_GROUP_TILE: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5, 7)
# Part k of a scale: for each channel group, which tile it uses.
TWO_PART_ORDER: tuple[tuple[int, ...], ...] = ((0, 1), (1, 0))
FOUR_PART_ORDER: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1), (1, 0, 3, 2))
EIGHT_PART_ORDER: tuple[tuple[int, ...], ...] = (
    (0, 2, 4, 6, 1, 3, 5, 7),
    (1, 3, 5, 7, 0, 2, 4, 6),
    (2, 4, 6, 0, 3, 5, 7, 1),
    (3, 5, 7, 1, 2, 4, 6, 0),
    (4, 6, 0, 2, 5, 7, 1, 3),
    (5, 7, 1, 3, 4, 6, 0, 2),
    (6, 0, 2, 4, 7, 1, 3, 5),
    (7, 1, 3, 5, 6, 0, 2, 4),
)


def tiled(cells: tuple[tuple[int, int], ...], period: int, height: int, width: int) -> torch.Tensor:
    """Bool [height, width]: the cells of a period×period tile, repeated and cropped."""
    tile = torch.zeros(period, period, dtype=torch.bool)
    for r, c in cells:
        tile[r, c] = True
    reps = (-(-height // period), -(-width // period))
    return tile.repeat(*reps)[:height, :width]


def grouped(group_masks: list[torch.Tensor], channels: int) -> torch.Tensor:
    """Bool [channels, H, W]: channel group g (channels // len(group_masks) channels) gets mask g."""
    per_group = channels // len(group_masks)
    return torch.stack(group_masks).repeat_interleave(per_group, dim=0)


def part_masks(
    tiles, order: tuple[tuple[int, ...], ...], period: int, channels: int, height: int, width: int
) -> torch.Tensor:
    """Bool [parts, channels, H, W]: part k gives channel group g the tile `tiles[order[k][g]]`."""
    return torch.stack(
        [grouped([tiled(tiles[t], period, height, width) for t in row], channels) for row in order]
    )


def select_index(mask: torch.Tensor) -> torch.Tensor:
    """Long [C, n]: per channel, the flat (raster-order) positions where `mask` [C, H, W] is set.

    Every channel must select the same number of cells; that is what lets a masked selection be
    reshaped into a smaller grid.
    """
    flat = mask.flatten(1)
    counts = flat.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("mask selects different numbers of cells per channel")
    return flat.nonzero()[:, 1].view(mask.shape[0], int(counts[0]))


def inverse_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Long [C, size]: for each target cell, the source position that `index` [C, n] placed there (0 if none)."""
    inverse = torch.zeros(index.shape[0], size, dtype=torch.long)
    sources = torch.arange(index.shape[1]).expand_as(index)
    return inverse.scatter_(1, index, sources)


def gather_cells(x: torch.Tensor, index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, k·C, H', W'] -> [B, k·C, height, width] taking per channel the flat cells `index` [C, h·w].

    The channel index repeats for k stacked blocks of C channels (e.g. [scales, means]).
    """
    b, c = x.shape[:2]
    repeat = c // index.shape[0]
    idx = index.repeat(repeat, 1) if repeat > 1 else index
    out = torch.gather(x.flatten(2), 2, idx.unsqueeze(0).expand(b, -1, -1))
    return out.view(b, c, height, width)


class Embedding:
    """A sub-grid embedded in a larger grid, per channel (cells picked by a [C, H, W] mask).

    `take` moves [B, k·C, H, W] -> [B, k·C, h, w] (raster order, as the official masked_select);
    `place` moves back, zeros elsewhere (as the official index-put into zeros).
    """

    def __init__(self, mask: torch.Tensor, small: tuple[int, int]):
        self.small = small
        self.big = tuple(mask.shape[1:])
        self.index = select_index(mask)
        self.inverse = inverse_index(self.index, mask[0].numel())
        self.mask = mask.unsqueeze(0).float()

    def to(self, device: torch.device) -> "Embedding":
        for name in ("index", "inverse", "mask"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return gather_cells(x, self.index, *self.small)

    def place(self, x: torch.Tensor) -> torch.Tensor:
        repeat = x.shape[1] // self.mask.shape[1]
        mask = self.mask.repeat(1, repeat, 1, 1).to(x.dtype) if repeat > 1 else self.mask.to(x.dtype)
        return gather_cells(x, self.inverse, *self.big) * mask


class LatentLayout:
    """All static masks and index maps for one latent size [C, H, W] (H, W multiples of 4).

    s2_in_y / s1_in_s2: sub-grid embeddings of the scales; hyper_s2: where the s2 grid takes the
    hyperprior parameters from; parts[scale]: float [parts, 1, C, h, w] step masks on each grid;
    cells[scale][part]: long [n], the flat positions in [C, h, w] a step codes (bitstream order);
    level: long [C, H, W] with the scale (1, 2, 3) that codes each latent cell.
    """

    def __init__(self, channels: int, height: int, width: int, device: torch.device | None = None):
        if height % 4 or width % 4:
            raise ValueError(f"latent size {height}×{width} must be a multiple of 4")
        c, h, w = channels, height, width
        s2_full = grouped(
            [tiled(EIGHT_PART_TILES[a] + EIGHT_PART_TILES[b], 4, h, w) for a, b in S2_GROUP_TILES], c
        )
        s1_full = grouped([tiled(S1_TILES[t], 4, h, w) for t in S1_GROUP_TILE], c)
        s1_in_s2 = part_masks(FOUR_PART_TILES, ((0, 1, 2, 3),), 2, c, h // 2, w // 2)[0]

        self.s2_in_y = Embedding(s2_full, (h // 2, w // 2))
        self.s1_in_s2 = Embedding(s1_in_s2, (h // 4, w // 4))
        # The official code fills the s2 cells outside s1 with the hyper parameters found at the
        # full-resolution cells of s2 minus the s1 pattern above, in raster order.
        hyper_source = select_index(s2_full & ~s1_full)
        hyper_target = select_index(~s1_in_s2)
        inverse = torch.zeros(c, (h // 2) * (w // 2), dtype=torch.long)
        self.hyper_s2_index = inverse.scatter_(1, hyper_target, hyper_source)
        self.hyper_s2_mask = (~s1_in_s2).unsqueeze(0).float()
        self.hyper_s3_mask = (~s2_full).unsqueeze(0).float()
        self.parts = {
            "s1": part_masks(TWO_PART_TILES, TWO_PART_ORDER, 2, c, h // 4, w // 4),
            "s2": part_masks(FOUR_PART_TILES, FOUR_PART_ORDER, 2, c, h // 2, w // 2),
            "s3": part_masks(EIGHT_PART_TILES, EIGHT_PART_ORDER, 4, c, h, w),
        }
        self.cells = {scale: [m.flatten().nonzero().squeeze(1) for m in masks] for scale, masks in self.parts.items()}
        self.parts = {scale: masks.unsqueeze(1).float() for scale, masks in self.parts.items()}
        s1_cells = self.s2_in_y.place(self.s1_in_s2.mask)[0] > 0
        self.level = torch.full((c, h, w), 3, dtype=torch.long)
        self.level[s2_full] = 2
        self.level[s1_cells] = 1
        self.sizes = {"s1": (h // 4, w // 4), "s2": (h // 2, w // 2), "s3": (h, w)}
        if device is not None:
            self.to(device)

    def to(self, device: torch.device) -> "LatentLayout":
        self.s2_in_y.to(device)
        self.s1_in_s2.to(device)
        for name in ("hyper_s2_index", "hyper_s2_mask", "hyper_s3_mask", "level"):
            setattr(self, name, getattr(self, name).to(device))
        self.parts = {k: v.to(device) for k, v in self.parts.items()}
        self.cells = {k: [i.to(device) for i in v] for k, v in self.cells.items()}
        return self

    def grid_of(self, scale: str, y: torch.Tensor) -> torch.Tensor:
        """y [B, C, H, W] restricted to a scale's grid: s1 [.., H/4, W/4], s2 [.., H/2, W/2], s3 = y."""
        if scale == "s3":
            return y
        y_s2 = self.s2_in_y.take(y)
        return y_s2 if scale == "s2" else self.s1_in_s2.take(y_s2)

    def upsample(self, scale: str, x: torch.Tensor) -> torch.Tensor:
        """Place a tensor on the grid of `scale` into the next finer grid (zeros elsewhere)."""
        return self.s1_in_s2.place(x) if scale == "s1" else self.s2_in_y.place(x)

    def hyper_params(self, scale: str, params: torch.Tensor) -> torch.Tensor:
        """Hyperprior [scales, means] [B, 2C, H, W] as the official code feeds them to `scale`.

        s1: the s1 cells; s2: the s2 cells not in s1 (official placement, zeros on s1 cells);
        s3: the cells not in s2 (zeros on s2 cells).
        """
        if scale == "s1":
            return self.grid_of("s1", params)
        if scale == "s2":
            h, w = self.sizes["s2"]
            mask = self.hyper_s2_mask.repeat(1, 2, 1, 1).to(params.dtype)
            return gather_cells(params, self.hyper_s2_index, h, w) * mask
        return params * self.hyper_s3_mask.repeat(1, 2, 1, 1).to(params.dtype)
