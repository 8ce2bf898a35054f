"""FocalNet (focal modulation networks, Yang et al. 2022) as a multi-stage feature extractor.

Written to compute exactly what the official Salience DETR FocalNet-L backbone computes (Microsoft's detection
variant: channels-last blocks, inputs padded to the patch size before each patch embedding, a LayerNorm on every
returned stage) and to keep Microsoft's parameter names (``patch_embed``, ``layers.{i}.blocks.{j}``,
``layers.{i}.downsample``), so Microsoft's ImageNet checkpoints load without renaming. timm's ``focalnet_*`` models
are a different implementation (channels-first, no padding, other names): their outputs differ from the official
backbone's, by their size when the input is not a multiple of 4, so they are not used here.

Official Salience DETR FocalNet-L (``focalnet_large_lrf_fl4``, ``return_indices=(1, 2, 3)``, ``freeze_indices=(0,)``):
``FocalNetBackbone(embed_dim=192, depths=(2, 2, 18, 2), focal_levels=(4, 4, 4, 4), focal_windows=(3, 3, 3, 3),
drop_path_rate=0.5, use_conv_embed=True, use_postln=True, normalize_modulator=True, layerscale_value=1e-4,
output_norms=True, out_indices=(1, 2, 3), freeze_at=2)`` (the constructor defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

from .staged import NUM_STAGES, StagedBackbone, check_out_indices

__all__ = ["FocalNetBackbone"]


class _PatchEmbed(nn.Module):
    """Channels-last patch embedding: pad to a multiple of the stride, convolve, LayerNorm.

    ``overlapped`` replaces the non-overlapping ``stride x stride`` convolution by a 7x7 one (stride 4, the stem)
    or a 3x3 one (stride 2, between stages).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, overlapped: bool):
        super().__init__()
        self.stride = stride
        if not overlapped:
            self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=stride, stride=stride)
        elif stride == 4:
            self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=4, padding=2)
        elif stride == 2:
            self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        else:
            raise ValueError(f"overlapped patch embedding supports strides 2 and 4, got {stride}")
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, H, W, C_in]`` -> ``[B, ceil(H / stride), ceil(W / stride), C_out]``."""
        height, width = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, -width % self.stride, 0, -height % self.stride))
        x = self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class _FocalModulation(nn.Module):
    """Focal modulation of a channels-last map: gated hierarchical depth-wise contexts modulate a linear query."""

    def __init__(
        self, dim: int, focal_level: int, focal_window: int, use_postln_in_modulation: bool, normalize_modulator: bool
    ):
        super().__init__()
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        # query, context and one gate per level plus the global level, from one projection
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        kernel_sizes = [focal_window + 2 * level for level in range(focal_level)]
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in kernel_sizes
        )
        if use_postln_in_modulation:
            self.ln = nn.LayerNorm(dim)
        self.use_postln_in_modulation = use_postln_in_modulation

    def forward(self, x: Tensor) -> Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        channels = x.shape[-1]
        projected = self.f(x).permute(0, 3, 1, 2).contiguous()
        query, context, gates = torch.split(projected, (channels, channels, self.focal_level + 1), dim=1)
        aggregated = 0
        for level, layer in enumerate(self.focal_layers):
            context = layer(context)
            aggregated = aggregated + context * gates[:, level : level + 1]
        global_context = self.act(context.mean(2, keepdim=True).mean(3, keepdim=True))
        aggregated = aggregated + global_context * gates[:, self.focal_level :]
        if self.normalize_modulator:
            aggregated = aggregated / (self.focal_level + 1)
        out = (query * self.h(aggregated)).permute(0, 2, 3, 1).contiguous()
        if self.use_postln_in_modulation:
            out = self.ln(out)
        return self.proj(out)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _FocalBlock(nn.Module):
    """Residual focal-modulation and MLP branches, pre- or post-normalised, with optional layer scale."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float,
        focal_level: int,
        focal_window: int,
        drop_path: float,
        use_postln: bool,
        use_postln_in_modulation: bool,
        normalize_modulator: bool,
        layerscale_value: float | None,
    ):
        super().__init__()
        self.use_postln = use_postln
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = _FocalModulation(
            dim, focal_level, focal_window, use_postln_in_modulation, normalize_modulator
        )
        self.drop_path = StochasticDepth(drop_path, "row")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.use_layerscale = layerscale_value is not None
        if self.use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))

    def _branch(self, x: Tensor, norm: nn.Module, fn: nn.Module, gamma: Tensor | None) -> Tensor:
        out = norm(fn(x)) if self.use_postln else fn(norm(x))
        return self.drop_path(out if gamma is None else gamma * out)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = x + self._branch(x, self.norm1, self.modulation, self.gamma_1 if self.use_layerscale else None)
        return x + self._branch(x, self.norm2, self.mlp, self.gamma_2 if self.use_layerscale else None)


class _FocalStage(nn.Module):
    """The blocks of one stage and, unless it is the last built stage, the downsampling that follows them."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        if downsample is not None:
            self.downsample = downsample


class FocalNetBackbone(StagedBackbone):
    """FocalNet returning the (optionally LayerNorm-ed) outputs of chosen stages.

    Args:
        embed_dim: channels of stage 0 (doubled at each later stage).
        depths: blocks per stage.
        focal_levels: focal levels per stage.
        focal_windows: kernel size of the first focal level per stage (each later level adds 2).
        mlp_ratio: hidden size of the block MLPs relative to the channels.
        drop_path_rate: stochastic depth of the last block (linear in the block index from 0).
        patch_size: stride of the stem.
        use_conv_embed: overlapping convolutions in the stem (7x7) and the downsampling layers (3x3).
        use_postln: normalise the branch outputs instead of their inputs.
        use_postln_in_modulation: LayerNorm after the modulation, before its output projection.
        normalize_modulator: divide the aggregated context by ``focal_level + 1``.
        layerscale_value: initial per-channel branch scale; ``None`` for none.
        output_norms: a LayerNorm on every returned stage (official detection backbone).
        out_indices: returned stages, among 0..3, increasing.
        freeze_at: see :mod:`modeling.backbones.staged`.
        weights: local path or URL of Microsoft-layout weights (``patch_embed.*``, ``layers.*``; ``norm.*`` and
            ``head.*`` are ignored; the output norms keep their initialisation); ``None`` keeps the random one.
    """

    unused_weight_prefixes = ("norm.", "head.")
    optional_weight_prefixes = ("output_norms.",)

    def __init__(
        self,
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 18, 2),
        focal_levels: Sequence[int] = (4, 4, 4, 4),
        focal_windows: Sequence[int] = (3, 3, 3, 3),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.5,
        patch_size: int = 4,
        use_conv_embed: bool = True,
        use_postln: bool = True,
        use_postln_in_modulation: bool = False,
        normalize_modulator: bool = True,
        layerscale_value: float | None = 1e-4,
        output_norms: bool = True,
        out_indices: Sequence[int] = (1, 2, 3),
        freeze_at: int = 2,
        weights: str | None = None,
    ):
        super().__init__()
        for name, values in (("depths", depths), ("focal_levels", focal_levels), ("focal_windows", focal_windows)):
            if len(values) != NUM_STAGES:
                raise ValueError(f"{name} must have {NUM_STAGES} entries (one per stage), got {list(values)}")
        out_indices = check_out_indices(out_indices)
        if not 0 <= freeze_at <= NUM_STAGES + 1:
            raise ValueError(f"freeze_at must be in 0..{NUM_STAGES + 1}, got {freeze_at}")
        num_built = out_indices[-1] + 1
        channels = [embed_dim * 2**i for i in range(NUM_STAGES)]
        self.patch_embed = _PatchEmbed(3, embed_dim, patch_size, use_conv_embed)
        total_blocks, block_id = sum(depths), 0
        self.layers = nn.ModuleList()
        for stage in range(num_built):
            blocks = []
            for _ in range(depths[stage]):
                blocks.append(
                    _FocalBlock(
                        channels[stage],
                        mlp_ratio,
                        focal_levels[stage],
                        focal_windows[stage],
                        drop_path_rate * block_id / max(total_blocks - 1, 1),
                        use_postln,
                        use_postln_in_modulation,
                        normalize_modulator,
                        layerscale_value,
                    )
                )
                block_id += 1
            last = stage == num_built - 1
            downsample = None if last else _PatchEmbed(channels[stage], channels[stage + 1], 2, use_conv_embed)
            self.layers.append(_FocalStage(blocks, downsample))
        self.output_norms = (
            nn.ModuleDict({f"stage{i}": nn.LayerNorm(channels[i]) for i in out_indices}) if output_norms else None
        )
        self.apply(_init_weights)
        frozen = (["patch_embed"] if freeze_at >= 1 else []) + [
            f"layers.{stage}" for stage in range(min(freeze_at - 1, num_built))
        ]
        self._setup(out_indices, [channels[i] for i in out_indices], frozen, weights)

    def _unbuilt_weight_prefixes(self) -> tuple[str, ...]:
        last = len(self.layers) - 1
        return (f"layers.{last}.downsample.",) + tuple(f"layers.{j}." for j in range(last + 1, NUM_STAGES))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Runs the stem and the built stages.

        Args:
            images: ``[B, 3, H, W]`` normalised images (any size).

        Returns:
            dict, in ``out_features`` order, of ``[B, out_channels[i], h_i, w_i]`` maps with
            ``h_0 = ceil(H / 4)``, ``h_{i+1} = ceil(h_i / 2)``.
        """
        x = self.patch_embed(images.permute(0, 2, 3, 1))
        outputs = {}
        for stage, layer in enumerate(self.layers):
            x = layer.blocks(x)
            name = f"stage{stage}"
            if stage in self.out_indices:
                out = self.output_norms[name](x) if self.output_norms is not None else x
                outputs[name] = out.permute(0, 3, 1, 2).contiguous()
            if hasattr(layer, "downsample"):
                x = layer.downsample(x)
        return outputs


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights, zero biases; unit LayerNorms (convolutions keep PyTorch's default)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
