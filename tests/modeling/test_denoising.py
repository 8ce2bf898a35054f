"""Contrastive denoising queries: layout, noise rules, attention mask, output split (modeling/denoising.py)."""

import pytest
import torch

from modeling.criterion import DetrCriterion, denoising_indices
from modeling.denoising import ContrastiveDenoising, DenoisingQueries, denoising_attn_mask, split_denoising_outputs
from modeling.matcher import HungarianMatcher

NUM_CLASSES, EMBED_DIM, NUM_QUERIES = 7, 16, 10


def _targets(counts, seed=0, num_classes=NUM_CLASSES):
    """Boxes with centres in [0.4, 0.6] and sizes in [0.02, 0.1]: CDN noise (scale 1) never reaches the borders."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for n in counts:
        centres = 0.4 + 0.2 * torch.rand(n, 2, generator=g)
        sizes = 0.02 + 0.08 * torch.rand(n, 2, generator=g)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        targets.append({"labels": labels, "boxes": torch.cat([centres, sizes], dim=1)})
    return targets


def _generator(**kwargs):
    torch.manual_seed(0)
    args = {"num_queries": NUM_QUERIES, "num_classes": NUM_CLASSES, "embed_dim": EMBED_DIM, **kwargs}
    return ContrastiveDenoising(**args)


def _corners(boxes):
    centre, size = boxes.split(2, dim=-1)
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def _decode_labels(generator, label_query):
    """Class whose embedding equals each query ``[..., D] -> [...]`` (embeddings are distinct)."""
    distance = (label_query[..., None, :] - generator.label_encoder.weight).abs().sum(-1)
    assert bool((distance.min(-1).values == 0).all())
    return distance.argmin(-1)


def test_parameter_layout_matches_official_checkpoint():
    generator = _generator()
    shapes = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    assert shapes == {"label_encoder.weight": (NUM_CLASSES, EMBED_DIM)}


def test_output_shapes():
    dn = _generator()(_targets([3, 1, 0]))
    groups, slots = 100 // 3, 6
    assert (dn.denoising_groups, dn.max_gt_num_per_image) == (groups, slots)
    assert dn.num_denoising_queries == groups * slots
    assert dn.label_query.shape == (3, groups * slots, EMBED_DIM)
    assert dn.box_query.shape == (3, groups * slots, 4)
    assert dn.attn_mask.shape == (groups * slots + NUM_QUERIES,) * 2 and dn.attn_mask.dtype == torch.bool


@pytest.mark.parametrize(
    "max_objects, denoising_nums, expected",
    [(0, 100, 1), (1, 100, 100), (3, 100, 33), (7, 100, 14), (100, 100, 1), (150, 100, 1), (4, 0, 1)],
)
def test_group_count(max_objects, denoising_nums, expected):
    assert _generator(denoising_nums=denoising_nums).num_groups(max_objects) == expected
    dn = _generator(denoising_nums=denoising_nums)(_targets([max_objects, 0]))
    assert (dn.denoising_groups, dn.max_gt_num_per_image) == (expected, 2 * max_objects)


def test_attention_mask_elementwise():
    groups, slots, queries = 3, 2, 4
    mask = denoising_attn_mask(groups, slots, queries)
    num_dn = groups * slots
    for row in range(num_dn + queries):
        for col in range(num_dn + queries):
            if row >= num_dn:  # matching query: sees matching queries only
                blocked = col < num_dn
            else:  # denoising query: sees its own group and the matching queries
                blocked = col < num_dn and row // slots != col // slots
            assert bool(mask[row, col]) == blocked, (row, col)


def test_module_mask_is_the_layout_mask():
    dn = _generator(denoising_nums=4)(_targets([2, 1]))
    assert (dn.denoising_groups, dn.max_gt_num_per_image) == (2, 4)
    assert torch.equal(dn.attn_mask, denoising_attn_mask(2, 4, NUM_QUERIES))


def test_slot_layout_and_padding_without_noise():
    """Positives then negatives per group, object j in slot j of each half, zero padding after an image's objects."""
    generator = _generator(denoising_nums=6, label_noise_prob=0.0, box_noise_scale=0.0)
    targets = _targets([3, 1])
    dn = generator(targets)
    groups, max_objects = 2, 3
    assert (dn.denoising_groups, dn.max_gt_num_per_image) == (groups, 2 * max_objects)
    labels = _decode_labels(generator, dn.label_query[0])
    for copy in range(2 * groups):
        first = copy * max_objects
        assert torch.equal(labels[first : first + 3], targets[0]["labels"])
        torch.testing.assert_close(dn.box_query[0, first : first + 3].sigmoid(), targets[0]["boxes"])
        assert torch.equal(_decode_labels(generator, dn.label_query[1, first]), targets[1]["labels"][0])
        torch.testing.assert_close(dn.box_query[1, first].sigmoid(), targets[1]["boxes"][0])
        padding = slice(first + 1, first + max_objects)
        assert bool((dn.label_query[1, padding] == 0).all()) and bool((dn.box_query[1, padding] == 0).all())


def test_criterion_indices_point_at_positive_slots():
    generator = _generator(denoising_nums=6, label_noise_prob=0.0, box_noise_scale=0.0)
    targets = _targets([3, 1, 0])
    dn = generator(targets)
    indices = denoising_indices(targets, dn.denoising_groups, dn.max_gt_num_per_image, torch.device("cpu"))
    half = dn.max_gt_num_per_image // 2
    for image, (query_idx, tgt_idx) in enumerate(indices):
        assert bool(((query_idx % dn.max_gt_num_per_image) < half).all())  # never a negative or padding slot
        assert torch.equal(
            _decode_labels(generator, dn.label_query[image, query_idx]), targets[image]["labels"][tgt_idx]
        )
        torch.testing.assert_close(dn.box_query[image, query_idx].sigmoid(), targets[image]["boxes"][tgt_idx])


def test_label_noise_rate():
    """A label is resampled uniformly over all classes with probability label_noise_prob / 2 (official rule)."""
    prob, num_classes = 0.5, 5
    generator = _generator(num_classes=num_classes, label_noise_prob=prob)
    expected = prob / 2 * (1 - 1 / num_classes)
    labels = torch.randint(0, num_classes, (40000,), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(3)
    changed = (generator.noise_labels(labels) != labels).float().mean().item()
    assert abs(changed - expected) < 0.01, (changed, expected)  # std 0.002
    assert _generator(label_noise_prob=0.0).noise_labels(labels).equal(labels)


def test_label_noise_rate_in_queries():
    prob, num_classes = 0.5, 5
    generator = _generator(num_classes=num_classes, denoising_nums=2000, label_noise_prob=prob, box_noise_scale=0.0)
    targets = _targets([10], num_classes=num_classes)
    torch.manual_seed(3)
    dn = generator(targets)
    assert dn.denoising_groups == 200
    labels = _decode_labels(generator, dn.label_query[0])
    changed = (labels != targets[0]["labels"].repeat(2 * dn.denoising_groups)).float().mean().item()
    expected = prob / 2 * (1 - 1 / num_classes)
    assert abs(changed - expected) < 0.03, (changed, expected)  # std 0.006


def test_box_noise_bounds_per_corner():
    """Each corner moves by less than scale * half-size for positives and by [1, 2) times that for negatives."""
    scale = 0.8
    generator = _generator(box_noise_scale=scale)
    boxes = _targets([4000], seed=1)[0]["boxes"]
    negative = torch.arange(4000) % 2 == 1
    torch.manual_seed(4)
    noised = generator.noise_boxes(boxes, negative)
    shift = (_corners(noised) - _corners(boxes)).abs()
    unit = scale * boxes[:, 2:].repeat(1, 2) / 2
    eps = 1e-6
    assert bool((shift[~negative] < unit[~negative] + eps).all())
    assert bool((shift[negative] > unit[negative] - eps).all())
    assert bool((shift[negative] < 2 * unit[negative] + eps).all())
    assert shift[negative].mean() > 2.5 * shift[~negative].mean()  # means 1.5 vs 0.5 units


def test_box_noise_is_clamped_to_the_image():
    boxes = torch.tensor([[0.02, 0.98, 0.04, 0.04]]).repeat(200, 1)
    noised = _generator(box_noise_scale=1.0).noise_boxes(boxes, torch.ones(200, dtype=torch.bool))
    corners = _corners(noised)
    assert bool((corners >= -1e-6).all() and (corners <= 1 + 1e-6).all())


def test_forward_positive_boxes_stay_close_and_negatives_move_farther():
    scale = 1.0
    dn = _generator(box_noise_scale=scale, denoising_nums=200)(_targets([5, 2], seed=2))
    targets = _targets([5, 2], seed=2)
    slots, max_objects = dn.max_gt_num_per_image, 5
    boxes = dn.box_query[0].sigmoid().view(dn.denoising_groups, 2, max_objects, 4)
    original = targets[0]["boxes"]
    positive_shift = (_corners(boxes[:, 0]) - _corners(original)).abs()
    unit = scale * original[:, 2:].repeat(1, 2) / 2
    assert slots == 10 and bool((positive_shift < unit + 1e-5).all())
    centre_shift = (boxes[:, :, :, :2] - original[:, :2]).abs().mean(dim=(0, 2, 3))
    assert centre_shift[1] > 2 * centre_shift[0]


def test_batch_without_objects():
    generator = _generator()
    dn = generator(_targets([0, 0]))
    assert (dn.denoising_groups, dn.max_gt_num_per_image, dn.num_denoising_queries) == (1, 0, 0)
    assert dn.label_query.shape == (2, 0, EMBED_DIM) and dn.box_query.shape == (2, 0, 4)
    assert torch.equal(dn.attn_mask, torch.zeros(NUM_QUERIES, NUM_QUERIES, dtype=torch.bool))
    outputs_class, outputs_coord = torch.rand(3, 2, NUM_QUERIES, NUM_CLASSES), torch.rand(3, 2, NUM_QUERIES, 4)
    matching_class, matching_coord, dn_metas = dn.split(outputs_class, outputs_coord)
    assert torch.equal(matching_class, outputs_class) and torch.equal(matching_coord, outputs_coord)
    assert dn_metas["denoising_output"]["pred_logits"].shape == (2, 0, NUM_CLASSES)


def test_split_round_trip():
    layers, batch, num_dn = 3, 2, 12
    outputs_class = torch.rand(layers, batch, num_dn + NUM_QUERIES, NUM_CLASSES)
    outputs_coord = torch.rand(layers, batch, num_dn + NUM_QUERIES, 4)
    matching_class, matching_coord, dn_metas = split_denoising_outputs(outputs_class, outputs_coord, 2, 6)
    assert matching_class.shape == (layers, batch, NUM_QUERIES, NUM_CLASSES)
    assert (dn_metas["denoising_groups"], dn_metas["max_gt_num_per_image"]) == (2, 6)
    dn_out = dn_metas["denoising_output"]
    per_layer = [*dn_out["aux_outputs"], dn_out]
    assert len(per_layer) == layers
    dn_class = torch.stack([o["pred_logits"] for o in per_layer])
    dn_coord = torch.stack([o["pred_boxes"] for o in per_layer])
    assert torch.equal(torch.cat([dn_class, matching_class], dim=2), outputs_class)
    assert torch.equal(torch.cat([dn_coord, matching_coord], dim=2), outputs_coord)
    _, _, no_aux = split_denoising_outputs(outputs_class, outputs_coord, 2, 6, aux_loss=False)
    assert "aux_outputs" not in no_aux["denoising_output"]


def test_prepend_and_split_feed_the_criterion():
    targets = _targets([3, 1])
    dn = _generator(denoising_nums=6)(targets)
    target, reference = dn.prepend_to(torch.zeros(2, NUM_QUERIES, EMBED_DIM), torch.full((2, NUM_QUERIES, 4), 0.5))
    assert target.shape == (2, dn.num_denoising_queries + NUM_QUERIES, EMBED_DIM)
    torch.testing.assert_close(reference[:, : dn.num_denoising_queries], dn.box_query.sigmoid())
    outputs_class = torch.randn(2, 2, reference.shape[1], NUM_CLASSES)
    outputs_coord = reference.expand(2, -1, -1, -1)
    _, _, dn_metas = dn.split(outputs_class, outputs_coord)
    criterion = DetrCriterion(NUM_CLASSES, HungarianMatcher(), weight_dict={})
    losses = criterion.denoising_losses(dn_metas, targets)
    assert set(losses) == {s + x for s in ("loss_class", "loss_bbox", "loss_giou") for x in ("_dn", "_dn_0")}
    assert all(torch.isfinite(v) for v in losses.values())


def test_deterministic_under_manual_seed():
    generator = _generator()
    targets = _targets([4, 2])
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(generator(targets))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][:3], runs[1][:3]))
    assert not torch.equal(runs[0].box_query, runs[2].box_query)
    assert isinstance(runs[0], DenoisingQueries)


def test_targets_are_not_modified():
    targets = _targets([3])
    boxes, labels = targets[0]["boxes"].clone(), targets[0]["labels"].clone()
    _generator()(targets)
    assert torch.equal(targets[0]["boxes"], boxes) and torch.equal(targets[0]["labels"], labels)


def test_bad_input_is_rejected():
    generator = _generator()
    with pytest.raises(ValueError, match="labels must be in"):
        generator([{"labels": torch.tensor([NUM_CLASSES]), "boxes": torch.rand(1, 4)}])
    with pytest.raises(ValueError, match=r"targets\[0\]"):
        generator([{"labels": torch.tensor([1]), "boxes": torch.rand(2, 4)}])
    with pytest.raises(ValueError, match="batch size 0"):
        generator([])
    with pytest.raises(ValueError, match="label_noise_prob"):
        _generator(label_noise_prob=1.5)
