"""Multi-layer perceptron used by DETR heads (box regression, query position projection)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    Layer ``i`` maps ``input_dim -> hidden_dim -> ... -> hidden_dim -> output_dim``; weights are
    xavier-uniform initialised and biases zeroed.

    Args:
        input_dim: input channels.
        hidden_dim: channels of every hidden layer.
        output_dim: output channels.
        num_layers: number of linear layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims_in, dims_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``[..., input_dim]`` to ``[..., output_dim]``."""
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < self.num_layers - 1:
                x = F.relu(x)
        return x
