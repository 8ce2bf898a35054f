"""Post-norm residual feed-forward block of the DETR encoder and decoder layers."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "FFN", "build_activation"]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def build_activation(name: str) -> nn.Module:
    """An activation module by (case-insensitive) name: ``relu``, ``gelu`` or ``silu``."""
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}, expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


class FFN(nn.Module):
    """``norm(x + dropout(linear2(dropout(act(linear1(x))))))``.

    Args:
        embed_dim: input and output channels ``E``.
        d_ffn: hidden channels.
        dropout: dropout after the activation and on the residual branch.
        activation: ``relu``, ``gelu`` or ``silu``.
    """

    def __init__(self, embed_dim: int = 256, d_ffn: int = 1024, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.linear1 = nn.Linear(embed_dim, d_ffn)
        self.activation = build_activation(activation)
        if isinstance(self.activation, nn.ReLU):
            # linear1's output is read only here and its backward does not need it, so it is rectified in place
            # (forward() hands linear1 a 2-D input: in place on the 3-D view of a matrix product, autograd would
            # copy the whole hidden layer back in the backward pass)
            self.activation.inplace = True
        self.dropout1 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, embed_dim)
        self.dropout2 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``[..., E]`` to ``[..., E]``."""
        hidden = self.dropout1(self.activation(self.linear1(x.reshape(-1, x.shape[-1]))))
        return self.norm(x + self.dropout2(self.linear2(hidden)).view(x.shape))
