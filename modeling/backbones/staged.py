"""What the hierarchical backbones (Swin, ConvNeXt, FocalNet) share: stage selection, freezing, weight loading.

These backbones have a stem (patch embedding), four stages whose resolution halves from one to the next (strides
4, 8, 16, 32) and a downsampling layer between consecutive stages. ``out_indices`` picks the returned stages by
index (0..3); stages after the last returned one are not built. ``freeze_at`` follows :class:`ResNetBackbone`:
``0`` freezes nothing, ``1`` the stem, ``k >= 2`` the stem and stages ``0 .. k-2``, each together with the
downsampling layer that follows it (the official Salience DETR ``freeze_indices=(0,)`` is ``freeze_at=2``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .resnet import load_state_dict_file

__all__ = ["StagedBackbone", "check_out_indices"]

NUM_STAGES = 4


def check_out_indices(out_indices: Sequence[int], num_stages: int = NUM_STAGES) -> list[int]:
    """``out_indices`` as a list, checked to be distinct stage indices in increasing order.

    Raises:
        ValueError: if empty, out of ``0 .. num_stages - 1``, repeated or not increasing.
    """
    indices = [int(i) for i in out_indices]
    if not indices or indices != sorted(set(indices)) or not all(0 <= i < num_stages for i in indices):
        raise ValueError(
            f"out_indices must be distinct stage indices in 0..{num_stages - 1}, increasing, got {indices}"
        )
    return indices


class StagedBackbone(nn.Module):
    """Base of the four-stage backbones: bookkeeping of returned stages, frozen modules and pretrained weights.

    A subclass builds its modules, then calls :meth:`_setup`.

    Attributes:
        out_features: ``"stage{i}"`` for each returned stage index ``i``.
        out_channels: channels of each returned stage.
        strides: stride of each returned stage w.r.t. the input (``4 * 2**i``).
        frozen_modules: qualified names of the frozen submodules.
    """

    #: prefixes of pretrained-weight keys that belong to parts never built here (classification head, final norm)
    unused_weight_prefixes: tuple[str, ...] = ()
    #: prefixes of module keys that pretrained (classification) weights do not provide
    optional_weight_prefixes: tuple[str, ...] = ()
    #: suffixes of module keys that pretrained weights may lack (constant buffers rebuilt at construction)
    optional_weight_suffixes: tuple[str, ...] = ()

    def _setup(
        self,
        out_indices: Sequence[int],
        out_channels: Sequence[int],
        frozen_modules: Sequence[str],
        weights: str | None,
    ) -> None:
        self.out_indices = list(out_indices)
        self.out_features = [f"stage{i}" for i in self.out_indices]
        self.out_channels = list(out_channels)
        self.strides = [4 * 2**i for i in self.out_indices]
        if weights is not None:
            self.load_weights(weights)
        self.frozen_modules = list(frozen_modules)
        for name in self.frozen_modules:
            self.get_submodule(name).requires_grad_(False)
        self.train(self.training)

    def _unbuilt_weight_prefixes(self) -> tuple[str, ...]:
        """Prefixes of pretrained-weight keys of stages (or layers) not built because no later stage is returned."""
        return ()

    def load_weights(self, path_or_url: str) -> None:
        """Loads pretrained weights in this module's layout (torchvision's, or Microsoft's for FocalNet).

        Keys of parts not built here (classification head, final norm, unused later stages) are ignored; the
        output norms, which classification weights lack, keep their initialisation.

        Raises:
            FileNotFoundError: if a local file is missing.
            KeyError: if keys of built parts are missing or unknown keys remain (the message lists them).
        """
        state = load_state_dict_file(path_or_url)
        skipped = self.unused_weight_prefixes + self._unbuilt_weight_prefixes()
        state = {k: v for k, v in state.items() if not k.startswith(skipped)}
        result = self.load_state_dict(state, strict=False)
        missing = [
            k
            for k in result.missing_keys
            if not (k.startswith(self.optional_weight_prefixes) or k.endswith(self.optional_weight_suffixes))
        ]
        if missing or result.unexpected_keys:
            raise KeyError(
                f"weights {path_or_url} do not match {type(self).__name__}: "
                f"missing {missing[:8]} ({len(missing)} in all), "
                f"unexpected {result.unexpected_keys[:8]} ({len(result.unexpected_keys)} in all)"
            )

    def train(self, mode: bool = True) -> StagedBackbone:
        """Sets the mode; frozen modules always stay in eval mode (no stochastic depth in frozen stages)."""
        super().train(mode)
        for name in getattr(self, "frozen_modules", []):
            self.get_submodule(name).eval()
        return self
