"""Dataset dict collection and loaders: filtering, determinism across workers, exact resume."""

import itertools
import logging
import random
import uuid

import numpy as np
import pytest
import torch

from data.build import (
    MapDataset,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from data.catalog import DatasetCatalog, MetadataCatalog
from data.coco import load_coco_json
from data.mapper import DetrDatasetMapper
from data.synthetic import generate_synthetic_coco
from data.transforms import RandomCrop, RandomFlip, ResizeShortestEdge


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def synthetic_dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    json_files = generate_synthetic_coco(str(root), num_train=10, num_val=0, seed=1)
    return load_coco_json(json_files["train"], str(root / "train"))


def train_mapper():
    return DetrDatasetMapper(
        augmentation=[RandomFlip(), ResizeShortestEdge([160, 192, 224], max_size=320, sample_style="choice")],
        augmentation_with_crop=[
            RandomFlip(),
            ResizeShortestEdge([192, 224], sample_style="choice"),
            RandomCrop("absolute_range", (128, 192)),
            ResizeShortestEdge([160, 192, 224], max_size=320, sample_style="choice"),
        ],
        is_train=True,
    )


def register_dicts(dicts, classes=("a", "b")):
    name = unique("build_test")
    DatasetCatalog.register(name, lambda: list(dicts))
    MetadataCatalog.get(name).set(thing_classes=list(classes))
    return name


def fake(image_id, anns):
    return {"file_name": f"{image_id}.png", "height": 10, "width": 20, "image_id": image_id, "annotations": anns}


def test_filter_empty_and_class_table(caplog):
    box = {"bbox": [0, 0, 1, 1], "category_id": 1, "iscrowd": 0}
    crowd = {"bbox": [0, 0, 1, 1], "category_id": 0, "iscrowd": 1}
    first = register_dicts([fake(1, [box]), fake(2, []), fake(3, [crowd])])
    second = register_dicts([fake(4, [box, box, crowd])])
    with caplog.at_level(logging.INFO, logger="data.build"):
        dicts = get_detection_dataset_dicts([first, second], check_images=False)  # fake file names
    assert [d["image_id"] for d in dicts] == [1, 4]
    text = caplog.text
    assert "Removed 2 images without annotations" in text
    assert "b" in text and "| #instances" in text and "3" in text  # 3 non-crowd instances of class "b"
    assert len(get_detection_dataset_dicts(first, filter_empty=False, check_images=False)) == 3


def test_empty_and_mismatched_datasets_raise():
    empty = register_dicts([])
    with pytest.raises(ValueError, match=f"'{empty}' is empty"):
        get_detection_dataset_dicts(empty)
    only_empty_images = register_dicts([fake(1, [])])
    with pytest.raises(ValueError, match="No images with annotations"):
        get_detection_dataset_dicts(only_empty_images, check_images=False)
    box = {"bbox": [0, 0, 1, 1], "category_id": 0, "iscrowd": 0}
    a, b = register_dicts([fake(1, [box])], ("x",)), register_dicts([fake(2, [box])], ("y",))
    with pytest.raises(ValueError, match="different thing_classes"):
        get_detection_dataset_dicts([a, b], check_images=False)
    out_of_range = register_dicts([fake(3, [dict(box, category_id=2)])])
    with pytest.raises(ValueError, match=r"3\.png .*category_id 2 outside 0\.\.1"):
        get_detection_dataset_dicts(out_of_range, check_images=False)
    with pytest.raises(TypeError, match="filter_emtpy"):
        get_detection_dataset_dicts(a, filter_emtpy=False)


def batches(loader, n):
    return list(itertools.islice(iter(loader), n))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for batch_a, batch_b in zip(a, b):
        assert [d["image_id"] for d in batch_a] == [d["image_id"] for d in batch_b]
        for da, db in zip(batch_a, batch_b):
            assert torch.equal(da["image"], db["image"])
            assert torch.equal(da["boxes"], db["boxes"]) and torch.equal(da["labels"], db["labels"])


def test_train_loader_workers_and_resume_give_identical_batches(synthetic_dicts):
    loader0 = build_detection_train_loader(synthetic_dicts, train_mapper(), total_batch_size=2, seed=5)
    assert (loader0.dataset_size, loader0.total_batch_size, loader0.batch_size_per_rank) == (10, 2, 2)
    reference = batches(loader0, 8)  # 16 images: beyond one epoch
    sizes = {tuple(d["image"].shape) for batch in reference for d in batch}
    assert len(sizes) > 3  # augmentation is random across positions
    for batch in reference:
        assert len({d["width"] >= d["height"] for d in batch}) == 1  # grouped by original orientation
        assert all(d["boxes"].shape == (len(d["labels"]), 4) for d in batch)
    assert_same_batches(batches(loader0, 8), reference)  # re-iterating restarts the stream
    loader2 = build_detection_train_loader(synthetic_dicts, train_mapper(), 2, num_workers=2, seed=5)
    assert_same_batches(batches(loader2, 8), reference)
    loader2.set_start_iter(5)
    assert_same_batches(batches(loader2, 3), reference[5:])
    loader0.set_start_iter(3)
    assert_same_batches(batches(loader0, 5), reference[3:])


def test_train_loader_seeds_differ(synthetic_dicts):
    a = batches(build_detection_train_loader(synthetic_dicts, train_mapper(), 2, seed=1), 3)
    b = batches(build_detection_train_loader(synthetic_dicts, train_mapper(), 2, seed=2), 3)
    assert [d["image_id"] for x in a for d in x] != [d["image_id"] for x in b for d in x]


def test_map_dataset_restores_caller_rngs_and_depends_on_position_only(synthetic_dicts):
    dataset = MapDataset(synthetic_dicts, train_mapper(), seed=3)
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    first = dataset[(17, 4)]
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    torch.manual_seed(999)  # a different caller state changes nothing
    again = dataset[(17, 4)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["boxes"], again["boxes"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mapper_errors_propagate_with_file_name(synthetic_dicts, num_workers):
    dicts = [dict(d) for d in synthetic_dicts]
    dicts[0] = dict(dicts[0], file_name="/nonexistent/gone.png")
    loader = build_detection_train_loader(dicts, train_mapper(), 2, num_workers=num_workers, seed=0)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        batches(loader, 10)


def test_total_batch_size_must_divide_world_size(synthetic_dicts, monkeypatch):
    import data.build

    monkeypatch.setattr(data.build.comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="total_batch_size=4 .* world size 3"):
        build_detection_train_loader(synthetic_dicts, train_mapper(), 4, seed=0)


def test_test_loader(synthetic_dicts):
    mapper = DetrDatasetMapper([ResizeShortestEdge(128, max_size=200)], is_train=False)
    loader = build_detection_test_loader(synthetic_dicts, mapper, batch_size=3)
    assert len(loader) == 4
    outputs = [d for batch in loader for d in batch]
    assert [d["image_id"] for d in outputs] == [d["image_id"] for d in synthetic_dicts]
    assert all("boxes" not in d and min(d["image"].shape[-2:]) == 128 for d in outputs)
    assert len(build_detection_test_loader(synthetic_dicts, mapper, num_workers=2)) == 10


def failing_mapper(record):
    raise RuntimeError("boom")


def test_mapper_exception_notes_name_the_file(synthetic_dicts):
    dataset = MapDataset(synthetic_dicts, failing_mapper)
    with pytest.raises(RuntimeError, match="boom") as excinfo:
        dataset[(3, 2)]
    assert any(synthetic_dicts[2]["file_name"] in note for note in excinfo.value.__notes__)
    loader = build_detection_train_loader(synthetic_dicts, failing_mapper, 2, num_workers=1, seed=0)
    with pytest.raises(RuntimeError, match=r"boom[\s\S]*while mapping .*\.png"):
        batches(loader, 1)
