"""timm models (Swin, ConvNeXt, FocalNet, ...) as multi-stage feature extractors.

timm is optional: this module imports without it, and only constructing :class:`TimmBackbone` needs it.

The official Salience DETR model zoo's large backbones are *not* built with timm here: :class:`SwinBackbone` and
:class:`ConvNeXtBackbone` wrap torchvision's architectures, which the official code uses, and
:class:`FocalNetBackbone` reimplements Microsoft's detection FocalNet; all three are bit-exact with the official
backbones and load the official checkpoints (via ``scripts/convert_checkpoint.py``). The closest timm models are
listed for experiments with timm's own weights:

==========================================  ===========================================  ===============
official backbone (Salience / Relation)     timm model name                              out_indices
==========================================  ===========================================  ===============
Swin-L (``swin_l``, window 7)               ``swin_large_patch4_window7_224``            ``(1, 2, 3)``
ConvNeXt-L (``conv_l``)                     ``convnext_large``                           ``(1, 2, 3)``
FocalNet-L (``focalnet_large_lrf_fl4``)     ``focalnet_large_fl4``, with                 ``(1, 2, 3)``
                                            ``normalize_modulator=True``
==========================================  ===========================================  ===============

timm's layouts differ from the official ones (their checkpoints would need a key mapping), and so do some
computations: timm's ``focalnet_large_fl4`` does not normalise the modulator by default (outputs differ by 1e-2
from the official backbone; with ``normalize_modulator=True`` by about 3e-6 in float32) and does not pad inputs to
the patch size (feature maps one smaller when the input size is not a multiple of 4). The official FocalNet
backbone puts a LayerNorm on every returned stage (``output_norms=True`` here); the official Swin and ConvNeXt
backbones return the stages as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .resnet import load_state_dict_file

__all__ = ["TimmBackbone"]


def _import_timm():
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            "TimmBackbone needs the 'timm' package, which is not installed; install it with `pip install timm` "
            "or use ResNetBackbone"
        ) from error
    return timm


class TimmBackbone(nn.Module):
    """A timm model created with ``features_only=True``, returning channels-first stage outputs.

    Args:
        model_name: timm model name, e.g. ``"swin_large_patch4_window7_224"``.
        out_indices: indices of the feature stages to return (timm's ``out_indices``).
        weights: local path or URL of a state dict for the timm features model; ``None`` keeps the random
            initialisation (timm's own download is never used).
        frozen_prefixes: parameter-name prefixes of the features model to freeze (``requires_grad=False``;
            their modules stay in eval mode), e.g. ``("stem", "stages_0")`` for ConvNeXt.
        output_norms: apply a LayerNorm over the channels of every returned stage (official FocalNet).
        model_kwargs: extra keyword arguments of ``timm.create_model`` (e.g. ``drop_path_rate``, ``img_size``).

    Attributes:
        out_features: ``"stage{i}"`` for each returned index.
        out_channels: channels of each returned stage.
        strides: stride of each returned stage w.r.t. the input.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: Sequence[int] = (1, 2, 3),
        weights: str | None = None,
        frozen_prefixes: Sequence[str] = (),
        output_norms: bool = False,
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        timm = _import_timm()
        self.model = timm.create_model(
            model_name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **(model_kwargs or {})
        )
        self.out_features = [f"stage{i}" for i in out_indices]
        self.out_channels = list(self.model.feature_info.channels())
        self.strides = list(self.model.feature_info.reduction())
        output_fmt = getattr(self.model, "output_fmt", "NCHW")
        self.channels_last = str(getattr(output_fmt, "value", output_fmt)) == "NHWC"
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.out_channels) if output_norms else None
        if weights is not None:
            self.model.load_state_dict(load_state_dict_file(weights))
        self.frozen_modules = self._freeze(tuple(frozen_prefixes))
        self.train(self.training)

    def _freeze(self, prefixes: tuple[str, ...]) -> list[str]:
        if not prefixes:
            return []
        frozen = [name for name, _ in self.model.named_modules() if name and name.startswith(prefixes)]
        if not frozen:
            raise ValueError(f"frozen_prefixes {list(prefixes)} match no module of the timm model")
        for name in frozen:
            self.model.get_submodule(name).requires_grad_(False)
        return frozen

    def train(self, mode: bool = True) -> TimmBackbone:
        """Sets the mode; frozen modules always stay in eval mode."""
        super().train(mode)
        for name in getattr(self, "frozen_modules", []):
            self.model.get_submodule(name).eval()
        return self

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Runs the features model.

        Args:
            images: ``[B, 3, H, W]`` normalised images.

        Returns:
            dict, in ``out_features`` order, of ``[B, out_channels[i], H / strides[i], W / strides[i]]`` maps.
        """
        features = self.model(images)
        return {name: self._to_channels_first(i, f) for i, (name, f) in enumerate(zip(self.out_features, features))}

    def _to_channels_first(self, index: int, feature: Tensor) -> Tensor:
        """Applies the optional output norm (over channels) and returns ``[B, C, H, W]``."""
        channels_last = self.channels_last
        if self.norms is not None:
            feature = self.norms[index](feature if channels_last else feature.permute(0, 2, 3, 1))
            channels_last = True
        return feature.permute(0, 3, 1, 2).contiguous() if channels_last else feature
