"""Relation DETR's encoder: the deformable encoder whose memory fuses the outputs of all its layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modeling.transformer import DeformableEncoder, MultiLevelTokens

__all__ = ["LayerFusionEncoder"]


class LayerFusionEncoder(DeformableEncoder):
    """:class:`~modeling.transformer.DeformableEncoder` whose memory is an MLP of all layer outputs.

    ``memory = LayerNorm(Linear(ReLU(Linear(concat(x_0, x_1, ..., x_n)))))`` with ``x_0`` the input tokens and
    ``x_i`` the output of layer ``i``; the first linear maps ``(n + 1) * E`` channels to ``E``.

    Args:
        layer: the layer to copy (a ``DeformableEncoderLayer``).
        num_layers: number of layers ``n``.
    """

    def __init__(self, layer: nn.Module, num_layers: int = 6):
        super().__init__(layer, num_layers)
        embed_dim = self.embed_dim
        self.layer_fusion = nn.Sequential(
            nn.Linear((num_layers + 1) * embed_dim, embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dim, embed_dim),
            nn.LayerNorm(embed_dim),
        )

    def forward(self, tokens: MultiLevelTokens, two_stage: nn.Module | None = None) -> Tensor:
        """``[B, S, E]`` fused memory of the flattened multi-level ``tokens`` (``two_stage`` is not used)."""
        del two_stage
        outputs = [tokens.feats, *self.layer_outputs(tokens)]
        return self.layer_fusion(torch.cat(outputs, -1))
