"""Softmax attention with a learnable additive bias, computed with two ``[N, Q, K]`` buffers.

Relation DETR and LP-DETR add a learned ``[B * heads, Q, Q]`` relation bias to the logits of the decoder's query
self-attention. Because the bias needs a gradient, PyTorch's fused CPU attention kernel does not apply, and
``scaled_dot_product_attention`` falls back to its composite path, which materialises the logits, the masked
logits, the probabilities and their gradients as separate ``[B * heads, Q, Q]`` tensors (plus the checks of its
"safe" softmax). :func:`biased_attention` computes the same thing with one forward buffer (logits, turned into
probabilities in place) and one backward buffer (the probabilities' gradient, turned into the logits' gradient in
place, which is also the bias gradient). The softmax backward uses ``sum_j p_ij * dp_ij = dout_i . out_i``, so it
needs no extra ``[N, Q, K]`` product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["biased_attention"]


class _BiasedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None, scale: float) -> Tensor:
        probs = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
        if mask is not None:
            probs.masked_fill_(mask, float("-inf"))
        torch.softmax(probs, dim=-1, out=probs)
        out = torch.bmm(probs, v)
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, probs, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, probs, out = ctx.saved_tensors
        # under autocast the forward's products ran in a lower precision (probs' dtype): so does the backward
        dtype = probs.dtype
        q, k, v, out, grad_out = (t.to(dtype) for t in (q, k, v, out, grad_out.contiguous()))
        grad_v = torch.bmm(probs.transpose(1, 2), grad_out) if ctx.needs_input_grad[2] else None
        grad_logits = torch.bmm(grad_out, v.transpose(1, 2))
        # softmax backward in place: p * (dp - sum_j p_j dp_j), where the row sums equal dout . out
        grad_logits.sub_((grad_out * out).sum(-1, keepdim=True)).mul_(probs)
        grad_q = torch.bmm(grad_logits, k).mul_(ctx.scale) if ctx.needs_input_grad[0] else None
        grad_k = torch.bmm(grad_logits.transpose(1, 2), q).mul_(ctx.scale) if ctx.needs_input_grad[1] else None
        grad_bias = grad_logits if ctx.needs_input_grad[3] else None
        return grad_q, grad_k, grad_v, grad_bias, None, None


def biased_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(D) + bias, masked to -inf where mask) v``, as a memory-lean autograd function.

    Args:
        q: ``[N, Q, D]`` queries (``N`` = batch x heads).
        k: ``[N, K, D]`` keys.
        v: ``[N, K, Dv]`` values.
        bias: ``[N, Q, K]`` additive logits bias (may require a gradient).
        mask: optional bool mask broadcastable to ``[N, Q, K]``, ``True`` where a query may not attend. Every
            query must be allowed at least one key (a fully masked row has no softmax; refused for CPU masks).

    Returns:
        ``[N, Q, Dv]``; gradients flow to ``q``, ``k``, ``v`` and ``bias``.
    """
    if bias.shape != (q.shape[0], q.shape[1], k.shape[1]):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected {(q.shape[0], q.shape[1], k.shape[1])}")
    # checked where it costs no device synchronisation (the models' masks always leave a query its own key)
    if mask is not None and mask.device.type == "cpu" and bool(mask.all(dim=-1).any()):
        raise ValueError("the attention mask blocks every key of some query; its softmax would be undefined")
    return _BiasedAttention.apply(q, k, v, bias, mask, 1.0 / math.sqrt(q.shape[-1]))
