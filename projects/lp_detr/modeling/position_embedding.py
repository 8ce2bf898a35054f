"""The sine position embedding as Relation DETR's checkpoints store it: without frequency buffers."""

from __future__ import annotations

from modeling.layers import PositionEmbeddingSine

__all__ = ["NonPersistentPositionEmbeddingSine"]


class NonPersistentPositionEmbeddingSine(PositionEmbeddingSine):
    """:class:`~modeling.layers.PositionEmbeddingSine` whose frequency buffers stay out of the state dict.

    Relation DETR computes the frequencies on the fly, so its checkpoints hold no ``position_embedding.dim_tx`` /
    ``dim_ty``; they are derived from the constructor arguments anyway. Arguments as for the parent.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("dim_tx", self.dim_tx, persistent=False)
        self.register_buffer("dim_ty", self.dim_ty, persistent=False)
