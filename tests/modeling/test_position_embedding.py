"""Sine position embeddings against hand-computed values."""

import math

import pytest
import torch

from modeling.layers import PositionEmbeddingSine, get_sine_pos_embed, sine_frequencies

PI = math.pi
SQRT3_2 = math.sqrt(3) / 2


def _sin_cos(*phases):
    """``[sin(a), cos(a), sin(b), cos(b), ...]`` as a float32 tensor."""
    return torch.tensor([f(phase) for phase in phases for f in (math.sin, math.cos)])


def _mask():
    """Two 2x3 maps; the second has its last column padded."""
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[1, :, 2] = True
    return mask


def test_frequencies():
    torch.testing.assert_close(sine_frequencies(4, 100), torch.tensor([1.0, 1.0, 10.0, 10.0]))
    torch.testing.assert_close(sine_frequencies(6, 1000), torch.tensor([1.0, 1.0, 10.0, 10.0, 100.0, 100.0]))


def test_normalized_with_offset_hand_values():
    pos = PositionEmbeddingSine(num_pos_feats=2, temperature=10000, normalize=True, offset=-0.5)(_mask())
    assert pos.shape == (2, 4, 2, 3) and pos.dtype == torch.float32
    # channels: sin(y), cos(y), sin(x), cos(x); y = (row + 0.5) / valid_h * 2pi, x = (col + 0.5) / valid_w * 2pi
    full = torch.tensor(
        [
            [[1, 1, 1], [-1, -1, -1]],
            [[0, 0, 0], [0, 0, 0]],
            [[SQRT3_2, 0, -SQRT3_2], [SQRT3_2, 0, -SQRT3_2]],
            [[0.5, -1, 0.5], [0.5, -1, 0.5]],
        ]
    )
    torch.testing.assert_close(pos[0], full, atol=2e-5, rtol=0)
    # second image: valid width 2, so x = pi/2, 3pi/2 and the padded column repeats 3pi/2
    torch.testing.assert_close(pos[1, 0:2, :, :2], full[0:2, :, :2], atol=2e-5, rtol=0)
    x_sin = torch.tensor([[1.0, -1.0, -1.0]] * 2)
    torch.testing.assert_close(pos[1, 2], x_sin, atol=2e-5, rtol=0)
    torch.testing.assert_close(pos[1, 3], torch.zeros(2, 3), atol=2e-5, rtol=0)


def test_eps_is_added_to_the_valid_size():
    pos = PositionEmbeddingSine(num_pos_feats=2, normalize=True, scale=1.0, eps=0.5)(torch.zeros(1, 1, 3, dtype=bool))
    x = torch.tensor([1.0, 2.0, 3.0]) / 3.5
    torch.testing.assert_close(pos[0, 2, 0], x.sin())
    torch.testing.assert_close(pos[0, 3, 0], x.cos())


def test_unnormalized_positions_and_frequencies():
    pos = PositionEmbeddingSine(num_pos_feats=4, temperature=100)(_mask())
    assert pos.shape == (2, 8, 2, 3)
    # y block for pixel (row 1, col 0) of image 0: y = 2 -> [sin 2, cos 2, sin 0.2, cos 0.2]
    torch.testing.assert_close(pos[0, :4, 1, 0], _sin_cos(2, 0.2))
    # x block for pixel (row 0, col 2): image 0 counts x = 3, image 1 (padded column) keeps x = 2
    torch.testing.assert_close(pos[0, 4:, 0, 2], _sin_cos(3, 0.3))
    torch.testing.assert_close(pos[1, 4:, 0, 2], _sin_cos(2, 0.2))


def test_offset_without_normalize_and_temperature_pair():
    pos = PositionEmbeddingSine(num_pos_feats=4, temperature=(100, 10000), offset=-1.0)(_mask())
    # x uses T_x = 100 (periods 1, 10), y uses T_y = 10000 (periods 1, 100); positions are 0-based now
    torch.testing.assert_close(pos[0, 4:, 0, 2], _sin_cos(2, 0.2))
    torch.testing.assert_close(pos[0, :4, 1, 0], _sin_cos(1, 0.01))
    with pytest.raises(ValueError, match="temperature"):
        PositionEmbeddingSine(temperature=(1, 2, 3))


def test_sine_pos_embed_of_boxes_hand_values():
    box = torch.tensor([[0.25, 0.5, 0.1, 0.2]])
    embed = get_sine_pos_embed(box, num_pos_feats=2, temperature=10000)
    # blocks [y, x, w, h], each [sin(2 pi v), cos(2 pi v)]
    torch.testing.assert_close(embed[0, :4], torch.tensor([0.0, -1.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(embed[0], _sin_cos(PI, PI / 2, 0.2 * PI, 0.4 * PI), atol=1e-6, rtol=0)
    unswapped = get_sine_pos_embed(box, num_pos_feats=2, exchange_xy=False)
    torch.testing.assert_close(unswapped[:, :4], embed[:, [2, 3, 0, 1]])


def test_sine_pos_embed_frequencies_and_shapes():
    point = torch.tensor([0.5, 0.25])
    embed = get_sine_pos_embed(point, num_pos_feats=4, temperature=10000, scale=2.0)
    # periods 1, 1, 100, 100; phases v * 2 / period; y block first
    torch.testing.assert_close(embed, _sin_cos(0.5, 0.005, 1.0, 0.01))
    assert get_sine_pos_embed(torch.rand(2, 5, 4)).shape == (2, 5, 512)
    relation = get_sine_pos_embed(torch.rand(2, 5, 6, 4), num_pos_feats=16, scale=100, exchange_xy=False)
    assert relation.shape == (2, 5, 6, 64)
