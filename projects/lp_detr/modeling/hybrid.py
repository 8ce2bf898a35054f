"""Relation DETR's training-only hybrid branch: one-to-many matching of extra queries, as two components.

* :class:`HybridBranch`, a branch of the two-stage transformer (``TwoStageTransformer(branches={"hybrid": ...})``):
  its own two-stage heads on the shared projected memory, its own top-k proposals and learnt query contents,
  decoded by the shared decoder without relations and without denoising queries. It runs in training only.
* :class:`HybridMatchingLoss`, an extra loss of the detector (``TwoStageDETR(extra_losses={"hybrid": ...})``):
  the branch's predictions matched by the criterion to the ground truth repeated ``assign`` times; the losses
  get the suffix ``_hybrid`` (``loss_class_hybrid``, ``loss_bbox_0_hybrid``, ``loss_giou_enc_hybrid``...).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from modeling.transformer import (
    MultiLevelTokens,
    ProjectedMemory,
    TransformerOutput,
    box_head,
    class_head,
    gather_proposals,
    topk_proposal_index,
)

__all__ = ["HybridBranch", "HybridMatchingLoss", "repeat_targets"]


def repeat_targets(targets: Sequence[dict[str, Tensor]], times: int) -> list[dict[str, Tensor]]:
    """Targets whose ``boxes`` and ``labels`` are repeated ``times`` times (one-to-many matching)."""
    return [{**t, "boxes": t["boxes"].repeat(times, 1), "labels": t["labels"].repeat(times)} for t in targets]


class HybridBranch(nn.Module):
    """The hybrid branch's heads and queries; called by the transformer with its projected memory.

    Args:
        num_proposals: the branch's queries (top-k proposals of its own class head).
        num_classes: classes ``C``.
        embed_dim: token channels ``E``.
        prior_prob: initial foreground probability of the class head.
    """

    def __init__(self, num_proposals: int, num_classes: int, embed_dim: int = 256, prior_prob: float = 0.01):
        super().__init__()
        if num_proposals < 1:
            raise ValueError(f"num_proposals must be >= 1, got {num_proposals}")
        self.num_proposals = num_proposals
        self.tgt_embed = nn.Embedding(num_proposals, embed_dim)
        self.class_head = class_head(embed_dim, num_classes, prior_prob)
        self.box_head = box_head(embed_dim)
        nn.init.normal_(self.tgt_embed.weight)

    def forward(
        self, memory: ProjectedMemory, tokens: MultiLevelTokens, two_stage: nn.Module
    ) -> TransformerOutput | None:
        """In training, the branch's predictions (every decoder layer, its proposals); None in inference."""
        if not self.training:
            return None
        logits, boxes = two_stage.proposal_predictions(memory, self.class_head, self.box_head)
        logits, boxes = gather_proposals(logits, boxes, topk_proposal_index(logits, self.num_proposals))
        target = self.tgt_embed.weight[: boxes.shape[1]].expand(boxes.shape[0], -1, -1)
        dec_logits, dec_boxes = two_stage.decoder(target, boxes.detach(), memory.memory, tokens, with_relation=False)
        return TransformerOutput(dec_logits, dec_boxes, logits, boxes)


class HybridMatchingLoss(nn.Module):
    """One-to-many losses of a branch's predictions: the criterion against the ground truth repeated ``assign`` times.

    Args:
        assign: copies of the ground truth.
        branch: the name of the transformer branch whose predictions are matched.
        suffix: appended to every loss name (the weight dict's ``hybrid_suffix``).
    """

    def __init__(self, assign: int = 6, branch: str = "hybrid", suffix: str = "_hybrid"):
        super().__init__()
        if assign < 1:
            raise ValueError(f"assign must be >= 1, got {assign}")
        self.assign = assign
        self.branch = branch
        self.suffix = suffix

    def forward(self, output: TransformerOutput, targets: Sequence[dict], batch, model: nn.Module) -> dict[str, Tensor]:
        """Unweighted losses of the branch (the losses run in training, where the branch always runs)."""
        del batch
        branch = output.branches.get(self.branch)
        if branch is None:
            raise ValueError(
                f"HybridMatchingLoss matches the predictions of the transformer branch {self.branch!r}, but the "
                f"transformer returned branches {sorted(output.branches)}: add the branch "
                f"(model.transformer.branches.{self.branch}) or remove the loss"
            )
        losses = model.criterion(model.criterion_inputs(branch, None), repeat_targets(targets, self.assign))
        return {f"{name}{self.suffix}": value for name, value in losses.items()}
