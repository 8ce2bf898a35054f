"""The memory-lean biased attention (the decoder self-attention's ``"fused"`` backend) against PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modeling.layers import biased_attention, reference_kernels
from modeling.transformer import DecoderLayerState, QuerySelfAttention


def _inputs(n=6, q=13, k=11, d=5, dv=7, masked=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, q, d, generator=g), torch.randn(n, k, d, generator=g), torch.randn(n, k, dv, generator=g)]
    bias = torch.randn(n, q, k, generator=g) * 3
    mask = None
    if masked:
        mask = torch.rand(q, k, generator=g) < 0.4
        mask[torch.arange(q), torch.randint(0, k, (q,), generator=g)] = False  # every query keeps a key
    leaves = [t.double().requires_grad_() for t in (*tensors, bias)]
    return leaves, mask


@pytest.mark.parametrize("masked", [True, False])
def test_values_and_gradients_equal_scaled_dot_product_attention_in_float64(masked):
    (q, k, v, bias), mask = _inputs(masked=masked)
    grad_out = torch.randn(q.shape[0], q.shape[1], v.shape[-1], dtype=torch.float64)

    out = biased_attention(q, k, v, bias, mask)
    grads = torch.autograd.grad(out, [q, k, v, bias], grad_out)
    logits_bias = bias if mask is None else bias.masked_fill(mask, float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=logits_bias)
    expected_grads = torch.autograd.grad(expected, [q, k, v, bias], grad_out)

    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for name, got, want in zip(["q", "k", "v", "bias"], grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12, msg=name)
    if mask is not None:
        assert not grads[3][:, mask].any(), "masked logits must get no bias gradient"


def test_only_the_inputs_that_need_it_get_a_gradient():
    (q, k, v, bias), mask = _inputs()
    bias = bias.detach()
    out = biased_attention(q, k, v.detach(), bias, mask)
    grad_q, grad_k = torch.autograd.grad(out.sum(), [q, k])
    assert grad_q.shape == q.shape and grad_k.shape == k.shape


def test_bad_shapes_and_fully_masked_rows_are_refused():
    (q, k, v, bias), mask = _inputs()
    with pytest.raises(ValueError, match="bias has shape"):
        biased_attention(q, k, v, bias[:, :, :-1], mask)
    mask = mask.clone()
    mask[3] = True
    with pytest.raises(ValueError, match="blocks every key"):
        biased_attention(q, k, v, bias, mask)


def _state(query, bias, mask):
    g = torch.Generator().manual_seed(3)
    return DecoderLayerState(
        index=1,
        query_pos=torch.randn(query.shape, generator=g, dtype=query.dtype),
        reference_points=None,
        memory=None,
        tokens=None,
        self_attn_mask=mask,
        self_attn_bias=bias,
    )


def test_query_self_attention_fused_backend_equals_the_torch_backend():
    """Through the module: the fused backend (used for a trained bias) against ``nn.MultiheadAttention``, float64,
    outputs and the gradients of the query, the bias and every parameter."""
    torch.manual_seed(0)
    attn = QuerySelfAttention(embed_dim=24, num_heads=4, backend="fused").double()
    batch, length = 2, 9
    query = torch.randn(batch, length, 24, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(batch * 4, length, length, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[:4, 4:] = mask[4:, :4] = True  # two denoising-style groups
    state = _state(query, bias, mask)
    leaves = [query, bias, *attn.parameters()]

    out = attn(query, state)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    with reference_kernels(attn) as switched:
        assert switched == [attn] and attn.backend == "torch"
        expected = attn(query, state)
        expected_grads = torch.autograd.grad(expected.square().sum(), leaves)
    assert attn.backend == "fused"

    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_query_self_attention_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="unknown self-attention backend 'flash'"):
        QuerySelfAttention(16, 2, backend="flash")


def test_bf16_autocast_stays_close_to_float32():
    """Under CPU bf16 autocast the products run in bf16; outputs and the bias gradient stay near float32's."""
    (q, k, v, bias), mask = _inputs(n=4, q=40, k=40, d=16, dv=16)
    q, k, v, bias = (t.detach().float().requires_grad_() for t in (q, k, v, bias))
    out = biased_attention(q, k, v, bias, mask)
    (grad_bias,) = torch.autograd.grad(out.square().sum(), [bias])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = biased_attention(q, k, v, bias, mask)
    (low_grad_bias,) = torch.autograd.grad(low.float().square().sum(), [bias])
    assert low.dtype == torch.bfloat16 and low_grad_bias.dtype == torch.float32
    torch.testing.assert_close(low.float(), out, rtol=0, atol=0.05 * out.abs().max().item())
    torch.testing.assert_close(low_grad_bias, grad_bias, rtol=0, atol=0.05 * grad_bias.abs().max().item())
