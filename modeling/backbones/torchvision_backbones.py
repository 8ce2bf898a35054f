"""torchvision's Swin Transformer and ConvNeXt as multi-stage feature extractors.

The official Salience DETR Swin-L and ConvNeXt-L backbones are torchvision's architectures (its
``SwinTransformer`` with padding to the window size and patch-merging padding, and its ``ConvNeXt``), so these
wrappers build the torchvision classes themselves: the outputs equal the official backbone's to the last bit on any
input size, and torchvision-layout weights (torchvision's own, or the official Swin-L ImageNet-22k conversion) load
without renaming. Only ``features`` is kept, up to the last returned stage; ``features.0`` is the stem,
``features.{2i+1}`` stage ``i`` and ``features.{2i+2}`` the downsampling after it.

Official Salience DETR backbones (``return_indices=(1, 2, 3)``, ``freeze_indices=(0,)``):

* Swin-L: ``SwinBackbone(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7,
  drop_path_rate=0.2, out_indices=(1, 2, 3), freeze_at=2)``, ImageNet-22k weights.
* ConvNeXt-L: ``ConvNeXtBackbone(dims=(192, 384, 768, 1536), depths=(3, 3, 27, 3), drop_path_rate=0.5,
  out_indices=(1, 2, 3), freeze_at=2)``, torchvision's ImageNet-1k weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer

from .staged import NUM_STAGES, StagedBackbone, check_out_indices

__all__ = ["ConvNeXtBackbone", "SwinBackbone"]


def _pair(value: int | Sequence[int]) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def _check_per_stage(name: str, values: Sequence) -> list:
    if len(values) != NUM_STAGES:
        raise ValueError(f"{name} must have {NUM_STAGES} entries (one per stage), got {list(values)}")
    return list(values)


class _FeaturesSequenceBackbone(StagedBackbone):
    """A torchvision ``features`` sequence (stem, stage, downsample, stage, ...) cut after the last returned stage."""

    #: whether the stages return ``[B, H, W, C]`` (Swin) rather than ``[B, C, H, W]`` (ConvNeXt)
    channels_last_stages = False

    def _build(
        self,
        features: nn.Sequential,
        stage_channels: Sequence[int],
        out_indices: Sequence[int],
        freeze_at: int,
        weights: str | None,
    ) -> None:
        out_indices = check_out_indices(out_indices)
        if not 0 <= freeze_at <= NUM_STAGES + 1:
            raise ValueError(f"freeze_at must be in 0..{NUM_STAGES + 1}, got {freeze_at}")
        self.features = features[: 2 * out_indices[-1] + 2]
        self.num_built_stages = out_indices[-1] + 1
        frozen = ["features.0"] if freeze_at >= 1 else []
        for stage in range(min(freeze_at - 1, self.num_built_stages)):
            frozen += [f"features.{j}" for j in (2 * stage + 1, 2 * stage + 2) if j < len(self.features)]
        self._setup(out_indices, [stage_channels[i] for i in out_indices], frozen, weights)

    def _unbuilt_weight_prefixes(self) -> tuple[str, ...]:
        return tuple(f"features.{j}." for j in range(len(self.features), 2 * NUM_STAGES))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Runs the stem and the built stages.

        Args:
            images: ``[B, 3, H, W]`` normalised images (any size).

        Returns:
            dict, in ``out_features`` order, of ``[B, out_channels[i], h_i, w_i]`` maps with ``h_0 = floor(H / 4)``;
            a later stage halves the previous size, rounding up for Swin (patch merging pads) and down for ConvNeXt
            (exactly ``H / strides[i]`` for sizes divisible by 32).
        """
        outputs = {}
        x = images
        for index, layer in enumerate(self.features):
            x = layer(x)
            stage = (index - 1) // 2
            if index % 2 == 1 and stage in self.out_indices:
                outputs[f"stage{stage}"] = x.permute(0, 3, 1, 2).contiguous() if self.channels_last_stages else x
        return outputs


class SwinBackbone(_FeaturesSequenceBackbone):
    """torchvision's Swin Transformer (v1) returning the outputs of chosen stages (no final norm).

    Args:
        embed_dim: channels of stage 0 (doubled at each later stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window (int or ``(h, w)``); inputs are padded to it inside each block.
        patch_size: stem patch size.
        mlp_ratio: hidden size of the block MLPs relative to the channels.
        drop_path_rate: stochastic depth of the last block (linear in the block index from 0).
        out_indices: returned stages, among 0..3, increasing.
        freeze_at: see :mod:`modeling.backbones.staged`.
        weights: local path or URL of torchvision-layout weights (``features.*``; ``norm.*`` and ``head.*`` are
            ignored); ``None`` keeps the random initialisation.
    """

    channels_last_stages = True
    unused_weight_prefixes = ("norm.", "head.")
    optional_weight_suffixes = (".relative_position_index",)

    def __init__(
        self,
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (6, 12, 24, 48),
        window_size: int | Sequence[int] = 7,
        patch_size: int | Sequence[int] = 4,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        out_indices: Sequence[int] = (1, 2, 3),
        freeze_at: int = 2,
        weights: str | None = None,
    ):
        super().__init__()
        swin = SwinTransformer(
            patch_size=_pair(patch_size),
            embed_dim=embed_dim,
            depths=_check_per_stage("depths", depths),
            num_heads=_check_per_stage("num_heads", num_heads),
            window_size=_pair(window_size),
            mlp_ratio=mlp_ratio,
            stochastic_depth_prob=drop_path_rate,
        )
        self._build(swin.features, [embed_dim * 2**i for i in range(NUM_STAGES)], out_indices, freeze_at, weights)


class ConvNeXtBackbone(_FeaturesSequenceBackbone):
    """torchvision's ConvNeXt returning the outputs of chosen stages.

    Args:
        dims: channels per stage.
        depths: blocks per stage.
        drop_path_rate: stochastic depth of the last block (linear in the block index from 0).
        layer_scale: initial value of the per-channel block scales.
        out_indices: returned stages, among 0..3, increasing.
        freeze_at: see :mod:`modeling.backbones.staged`.
        weights: local path or URL of torchvision-layout weights (``features.*``; ``classifier.*`` is ignored);
            ``None`` keeps the random initialisation.
    """

    unused_weight_prefixes = ("classifier.",)

    def __init__(
        self,
        dims: Sequence[int] = (192, 384, 768, 1536),
        depths: Sequence[int] = (3, 3, 27, 3),
        drop_path_rate: float = 0.5,
        layer_scale: float = 1e-6,
        out_indices: Sequence[int] = (1, 2, 3),
        freeze_at: int = 2,
        weights: str | None = None,
    ):
        super().__init__()
        dims = _check_per_stage("dims", dims)
        depths = _check_per_stage("depths", depths)
        settings = [
            CNBlockConfig(dims[i], dims[i + 1] if i + 1 < NUM_STAGES else None, depths[i]) for i in range(NUM_STAGES)
        ]
        convnext = ConvNeXt(settings, stochastic_depth_prob=drop_path_rate, layer_scale=layer_scale)
        self._build(convnext.features, dims, out_indices, freeze_at, weights)
