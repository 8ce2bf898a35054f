"""COCOEvaluator against pycocotools run directly on the same ground truth and detections.

With faster-coco-eval installed, ``use_fast_impl=True`` (the default) must give pycocotools' numbers.
"""

import contextlib
import importlib.util
import io
import json
import logging
import math
import os
import pickle
import re
import sys
import types
import uuid

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.catalog import DatasetCatalog, MetadataCatalog
from evaluation import COCOEvaluator, DatasetEvaluator

CATEGORY_IDS = (1, 3, 7, 9)  # nothing is annotated or detected as 9: its AP is NaN
CLASS_NAMES = ("apple", "bus", "cat", "dog")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
NUM_IMAGES = 8


# --------------------------------------------------------------------------- data
def make_coco_dict(seed: int = 0, num_images: int = NUM_IMAGES) -> dict:
    """Images with 2-6 gts each, of all sizes, some crowd; image 5 has none. Ids are non-contiguous."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        image_id = 100 + 3 * i
        width, height = int(rng.integers(400, 700)), int(rng.integers(300, 600))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": width, "height": height})
        num_gts = 0 if i == 5 else int(rng.integers(2, 7))
        for _ in range(num_gts):
            side = float(rng.choice([12.0, 20.0, 50.0, 80.0, 150.0, 250.0]))
            w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice(CATEGORY_IDS[:3])),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.uniform() < 0.1),
                }
            )
    categories = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASS_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_outputs(coco: dict, seed: int = 1, mapping: dict | None = None, perfect: bool = False) -> dict:
    """Model-style outputs per image_id: jittered gts (sometimes mislabelled) plus false positives."""
    mapping = mapping or {c: i for i, c in enumerate(CATEGORY_IDS)}
    rng = np.random.default_rng(seed)
    outputs = {}
    for image in coco["images"]:
        gts = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        boxes, scores, labels = [], [], []
        for gt in gts:
            if perfect:
                if not gt["iscrowd"]:
                    boxes.append(_xyxy(gt["bbox"]))
                    scores.append(1.0)
                    labels.append(mapping[gt["category_id"]])
                continue
            if rng.uniform() < 0.8:
                x, y, w, h = gt["bbox"]
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                boxes.append(_xyxy([x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]]))
                scores.append(rng.uniform(0.3, 1.0))
                wrong = rng.uniform() < 0.1
                labels.append(int(rng.integers(0, 3)) if wrong else mapping[gt["category_id"]])
        for _ in range(0 if perfect else int(rng.integers(0, 4))):
            w, h = rng.uniform(10, 200, 2)
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            boxes.append(_xyxy([x, y, w, h]))
            scores.append(rng.uniform(0.0, 0.7))
            labels.append(int(rng.integers(0, 3)))
        outputs[image["id"]] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
    return outputs


def _xyxy(box):
    x, y, w, h = box
    return [x, y, x + w, y + h]


def to_coco_results(outputs: dict, mapping: dict | None = None) -> list[dict]:
    """The same detections as COCO results with original category ids (what pycocotools expects)."""
    inverse = {v: k for k, v in (mapping or {c: i for i, c in enumerate(CATEGORY_IDS)}).items()}
    results = []
    for image_id, out in outputs.items():
        boxes = out["boxes"].double()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        for box, score, label in zip(xywh.tolist(), out["scores"].tolist(), out["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": inverse[label], "bbox": box, "score": score})
    return results


def register(name: str, json_file: str | None, coco: dict, mapping: dict | None = None) -> None:
    mapping = mapping or {c: i for i, c in enumerate(CATEGORY_IDS)}
    classes = [None] * len(mapping)
    for cat in coco["categories"]:
        classes[mapping[cat["id"]]] = cat["name"]
    DatasetCatalog.register(name, lambda: [])
    meta = {"thing_classes": classes, "thing_dataset_id_to_contiguous_id": mapping}
    if json_file is not None:
        meta["json_file"] = json_file
    MetadataCatalog.get(name).set(**meta)


def direct_cocoeval(json_file: str, results: list[dict], image_ids=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def feed(evaluator: DatasetEvaluator, outputs: dict, image_ids=None, batch_size: int = 3) -> None:
    image_ids = list(outputs) if image_ids is None else list(image_ids)
    for start in range(0, len(image_ids), batch_size):
        ids = image_ids[start : start + batch_size]
        inputs = [{"image_id": i, "height": 1, "width": 1, "file_name": f"{i}.jpg"} for i in ids]
        evaluator.process(inputs, [outputs[i] for i in ids])


def assert_same(a: float, b: float) -> None:
    assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9, (a, b)


@pytest.fixture
def dataset(tmp_path):
    """(name, json_file, coco dict) of a registered dataset; unregistered afterwards."""
    names = []

    def make(mapping=None, with_json=True, seed=0):
        coco = make_coco_dict(seed)
        json_file = str(tmp_path / f"gt_{len(names)}.json")
        with open(json_file, "w") as f:
            json.dump(coco, f)
        name = f"test_coco_eval_{uuid.uuid4().hex[:8]}"
        register(name, json_file if with_json else None, coco, mapping)
        names.append(name)
        return name, json_file, coco

    yield make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# -------------------------------------------------------------------------- tests
@pytest.mark.parametrize("mapping", [None, {7: 0, 1: 1, 3: 2, 9: 3}], ids=["sorted", "permuted"])
def test_matches_direct_pycocotools(dataset, tmp_path, mapping):
    name, json_file, coco = dataset(mapping)
    outputs = make_outputs(coco, mapping=mapping)
    out_dir = tmp_path / "out"
    evaluator = COCOEvaluator(name, output_dir=str(out_dir))
    evaluator.reset()
    feed(evaluator, outputs)
    results = evaluator.evaluate()

    expected = to_coco_results(outputs, mapping)
    direct = direct_cocoeval(json_file, expected)
    assert list(results) == ["bbox"]
    bbox = results["bbox"]
    assert list(bbox)[:12] == list(STAT_NAMES)
    for stat_name, stat in zip(STAT_NAMES, direct.stats):
        assert_same(bbox[stat_name], stat * 100 if stat > -1 else float("nan"))
    assert 0 < bbox["AP"] < 100
    for k, cat_id in enumerate(direct.params.catIds):
        precision = direct.eval["precision"][:, :, k, 0, -1]
        precision = precision[precision > -1]
        ap = float(np.mean(precision)) * 100 if precision.size else float("nan")
        assert_same(bbox[f"AP-{CLASS_NAMES[CATEGORY_IDS.index(cat_id)]}"], ap)
    assert len(bbox) == 12 + len(CATEGORY_IDS)
    assert math.isnan(bbox["AP-dog"])

    with open(out_dir / "coco_instances_results.json") as f:
        written = json.load(f)
    assert [(r["image_id"], r["category_id"]) for r in written] == [(r["image_id"], r["category_id"]) for r in expected]
    assert {r["category_id"] for r in written} <= set(CATEGORY_IDS)
    np.testing.assert_allclose([r["bbox"] for r in written], [r["bbox"] for r in expected], rtol=0, atol=1e-9)
    np.testing.assert_allclose([r["score"] for r in written], [r["score"] for r in expected], rtol=0, atol=1e-9)
    assert not [p for p in os.listdir(out_dir) if p.endswith(".tmp")]


def test_perfect_detections_give_ap_100(dataset):
    name, _, coco = dataset()
    evaluator = COCOEvaluator(name)
    feed(evaluator, make_outputs(coco, perfect=True))
    bbox = evaluator.evaluate()["bbox"]
    for key in ("AP", "AP50", "AP75", "AR100", *(f"AP-{c}" for c in CLASS_NAMES[:3])):
        assert bbox[key] == pytest.approx(100.0)


def test_no_predictions_returns_empty_with_warning(dataset, caplog):
    name, _, _ = dataset()
    evaluator = COCOEvaluator(name)
    evaluator.reset()
    with caplog.at_level(logging.WARNING):
        assert evaluator.evaluate() == {}
    assert "Did not receive valid predictions" in caplog.text


def test_images_without_detections_score_zero(dataset, caplog):
    name, _, coco = dataset()
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    evaluator = COCOEvaluator(name)
    feed(evaluator, {image["id"]: empty for image in coco["images"]})
    with caplog.at_level(logging.WARNING):
        bbox = evaluator.evaluate()["bbox"]
    assert "no detections" in caplog.text
    assert bbox["AP"] == 0.0 and bbox["AR100"] == 0.0


@pytest.mark.parametrize("label", [len(CATEGORY_IDS), -1])
def test_label_out_of_range_raises(dataset, label):
    name, _, coco = dataset()
    image_id = coco["images"][2]["id"]
    evaluator = COCOEvaluator(name)
    bad = {
        "boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]),
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([label]),
    }
    with pytest.raises(ValueError, match=rf"label {label} of image_id {image_id}"):
        evaluator.process([{"image_id": image_id}], [bad])


def test_malformed_outputs_raise(dataset):
    name, _, coco = dataset()
    image_id = coco["images"][0]["id"]
    evaluator = COCOEvaluator(name)
    with pytest.raises(KeyError, match="scores"):
        evaluator.process([{"image_id": image_id}], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    out = {"boxes": torch.zeros(2, 4), "scores": torch.zeros(1), "labels": torch.zeros(2, dtype=torch.int64)}
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        evaluator.process([{"image_id": image_id}], [out])
    with pytest.raises(ValueError, match="1 inputs but 2 outputs"):
        evaluator.process([{"image_id": image_id}], [out, out])
    with pytest.raises(ValueError, match="bbox"):
        COCOEvaluator(name, tasks=("segm",))


def test_subset_evaluation_uses_only_processed_images(dataset):
    name, json_file, coco = dataset()
    subset = [image["id"] for image in coco["images"][:3]]
    perfect = make_outputs(coco, perfect=True)
    evaluator = COCOEvaluator(name)
    feed(evaluator, perfect, image_ids=subset)
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)

    outputs = make_outputs(coco)
    evaluator.reset()
    feed(evaluator, outputs, image_ids=subset)
    bbox = evaluator.evaluate()["bbox"]
    expected = to_coco_results({i: outputs[i] for i in subset})
    direct = direct_cocoeval(json_file, expected, image_ids=subset)
    for stat_name, stat in zip(STAT_NAMES, direct.stats):
        assert_same(bbox[stat_name], stat * 100 if stat > -1 else float("nan"))


def test_max_dets_per_image_names_recall(dataset):
    name, _, coco = dataset()
    evaluator = COCOEvaluator(name, max_dets_per_image=50)
    feed(evaluator, make_outputs(coco))
    bbox = evaluator.evaluate()["bbox"]
    assert "AR50" in bbox and "AR100" not in bbox
    assert 0 < bbox["AP"] < 100


def test_dataset_without_json_is_converted_once(dataset, tmp_path, monkeypatch):
    name, json_file, coco = dataset(with_json=False)
    calls = []

    def convert_to_coco_json(dataset_name, output_file):
        calls.append((dataset_name, output_file))
        with open(output_file, "w") as f:
            json.dump(coco, f)

    monkeypatch.setitem(sys.modules, "data.coco", types.SimpleNamespace(convert_to_coco_json=convert_to_coco_json))
    outputs = make_outputs(coco)
    for _ in range(2):
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "conv"))
        feed(evaluator, outputs)
        bbox = evaluator.evaluate()["bbox"]
    assert len(calls) == 1 and calls[0][0] == name
    direct = direct_cocoeval(json_file, to_coco_results(outputs))
    assert_same(bbox["AP"], direct.stats[0] * 100)


# -------------------------------------------------------------- two processes
def _distributed_worker(rank: int, world_size: int, init_file: str, json_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        coco = make_coco_dict()
        register("dist_coco", json_file, coco)
        outputs = make_outputs(coco)
        evaluator = COCOEvaluator("dist_coco", distributed=True)
        evaluator.reset()
        feed(evaluator, outputs, image_ids=list(outputs)[rank::world_size], batch_size=2)
        results = evaluator.evaluate()
        with open(f"{result_file}.{rank}", "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(dataset, tmp_path):
    name, json_file, coco = dataset()
    result_file = str(tmp_path / "results.pkl")
    mp.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "dist_init"), json_file, result_file),
        nprocs=2,
        join=True,
    )
    with open(f"{result_file}.0", "rb") as f:
        rank0 = pickle.load(f)
    with open(f"{result_file}.1", "rb") as f:
        assert pickle.load(f) == {}

    evaluator = COCOEvaluator(name)
    feed(evaluator, make_outputs(coco))
    single = evaluator.evaluate()
    assert list(rank0["bbox"]) == list(single["bbox"])
    for key, value in single["bbox"].items():
        assert_same(rank0["bbox"][key], value)


# ------------------------------------------------------ pycocotools vs faster-coco-eval
needs_faster_coco_eval = pytest.mark.skipif(
    importlib.util.find_spec("faster_coco_eval") is None, reason="faster-coco-eval is not installed"
)
BOX_SIDES = (10.0, 20.0, 32.0, 50.0, 80.0, 96.0, 150.0, 250.0)  # small, medium and large; 32 and 96 on the limits
EVAL_CASES = [(100, False), (20, False), (300, True)]  # (max_dets_per_image, evaluate a subset of the images)
EVAL_CASE_IDS = ["maxdets100", "maxdets20", "maxdets300-subset"]


def make_custom_coco(category_ids: tuple[int, ...], seed: int = 0, num_images: int = 10) -> dict:
    """A COCO dict with the given category ids: 1-6 boxes per image of all sizes, a crowd box, image 3 empty."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        image_id = 1000 + 7 * i
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for _ in range(0 if i == 3 else int(rng.integers(1, 7))):
            w, h = float(rng.choice(BOX_SIDES)), float(rng.choice(BOX_SIDES))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            ann = {"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h], "area": w * h}
            ann.update(category_id=int(rng.choice(category_ids)), iscrowd=int(not annotations or rng.uniform() < 0.1))
            annotations.append(ann)
    categories = [{"id": c, "name": f"class{c}"} for c in category_ids]
    return {"images": images, "annotations": annotations, "categories": categories}


def add_false_positives(outputs: dict, coco: dict, num: int, seed: int = 2) -> dict:
    """``outputs`` with ``num`` more low-score random boxes per image (so that ``maxDets`` cuts some)."""
    rng = np.random.default_rng(seed)
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    num_classes = len(coco["categories"])
    extended = {}
    for image_id, out in outputs.items():
        width, height = sizes[image_id]
        wh = rng.uniform(8, 200, (num, 2))
        xy = rng.uniform(0, 1, (num, 2)) * (np.array([width, height]) - wh)
        boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
        extended[image_id] = {
            "boxes": torch.cat([out["boxes"], boxes]),
            "scores": torch.cat([out["scores"], torch.tensor(rng.uniform(0, 0.5, num), dtype=torch.float32)]),
            "labels": torch.cat([out["labels"], torch.tensor(rng.integers(0, num_classes, num))]),
        }
    return extended


@pytest.fixture
def eval_calls(monkeypatch):
    """Counts ``evaluate`` calls of pycocotools' ``COCOeval`` and of faster-coco-eval's ``COCOeval_faster``."""
    from faster_coco_eval import COCOeval_faster

    calls = {"pycocotools": 0, "faster-coco-eval": 0}
    for key, cls in (("pycocotools", COCOeval), ("faster-coco-eval", COCOeval_faster)):

        def evaluate(self, _original=cls.evaluate, _key=key):
            calls[_key] += 1
            return _original(self)

        monkeypatch.setattr(cls, "evaluate", evaluate)
    return calls


@pytest.fixture
def registered():
    """Registers a COCO dict (json in ``directory``) as a dataset; unregistered afterwards."""
    names = []

    def make(coco: dict, directory, mapping: dict) -> str:
        json_file = os.path.join(directory, f"custom_{len(names)}.json")
        with open(json_file, "w") as f:
            json.dump(coco, f)
        names.append(f"test_fast_eval_{uuid.uuid4().hex[:8]}")
        register(names[-1], json_file, coco, mapping)
        return names[-1]

    yield make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    """(name, coco dict) of the val split of a tiny synthetic dataset (4 train, 12 val images; ids 1, 3, 5, 7)."""
    from data.synthetic import generate_synthetic_coco, register_synthetic

    root = str(tmp_path_factory.mktemp("synthetic"))
    json_file = generate_synthetic_coco(root, num_train=4, num_val=12)["val"]
    names = register_synthetic(root, name_prefix=f"test_fast_{uuid.uuid4().hex[:8]}", num_train=4, num_val=12)
    with open(json_file) as f:
        coco = json.load(f)
    yield names[1], coco
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def evaluate_with(
    name: str, outputs: dict, use_fast_impl: bool, caplog, img_ids=None, max_dets: int = 100, expect: str = ""
) -> dict:
    """The bbox results of a ``COCOEvaluator`` fed ``outputs``; asserts the implementation the log names.

    ``expect`` is that implementation; by default the one ``use_fast_impl`` asks for.
    """
    evaluator = COCOEvaluator(name, max_dets_per_image=max_dets, use_fast_impl=use_fast_impl)
    feed(evaluator, outputs)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="evaluation.coco_evaluation"):
        bbox = evaluator.evaluate(img_ids=img_ids)["bbox"]
    expect = expect or ("faster-coco-eval" if use_fast_impl else "pycocotools")
    count = len(outputs if img_ids is None else img_ids)
    assert re.search(rf"Evaluating bbox on {count} images with {expect} \d", caplog.text), caplog.text
    return bbox


def assert_same_results(slow: dict, fast: dict, tol: float = 1e-9) -> None:
    """Same keys in the same order, values equal to ``tol`` (percent) or both NaN."""
    assert list(slow) == list(fast)
    for key in slow:
        assert (math.isnan(slow[key]) and math.isnan(fast[key])) or abs(slow[key] - fast[key]) <= tol, key


def compare_paths(name: str, outputs: dict, eval_calls, caplog, max_dets: int, subset: bool) -> tuple[dict, dict]:
    """(pycocotools, faster-coco-eval) bbox results on the same detections; each ran once, as its log says."""
    img_ids = sorted(outputs)[::2] if subset else None
    slow = evaluate_with(name, outputs, False, caplog, img_ids, max_dets)
    fast = evaluate_with(name, outputs, True, caplog, img_ids, max_dets)
    assert eval_calls == {"pycocotools": 1, "faster-coco-eval": 1}
    assert_same_results(slow, fast)
    assert list(slow)[:12] == [*STAT_NAMES[:6], "AR1", "AR10", f"AR{max_dets}", *STAT_NAMES[9:]]
    return slow, fast


@needs_faster_coco_eval
@pytest.mark.parametrize(("max_dets", "subset"), EVAL_CASES, ids=EVAL_CASE_IDS)
def test_fast_impl_matches_pycocotools_on_synthetic(synthetic_val, eval_calls, caplog, max_dets, subset):
    name, coco = synthetic_val
    mapping = {c["id"]: i for i, c in enumerate(coco["categories"])}
    outputs = add_false_positives(make_outputs(coco, seed=3, mapping=mapping), coco, num=12)
    slow, _ = compare_paths(name, outputs, eval_calls, caplog, max_dets, subset)
    assert 0 < slow["AP"] < 100
    assert len(slow) == 12 + 4


@needs_faster_coco_eval
@pytest.mark.parametrize("category_ids", [(1, 2, 3), (4, 17, 90)], ids=["ids1-3", "ids4-17-90"])
@pytest.mark.parametrize(("max_dets", "subset"), EVAL_CASES, ids=EVAL_CASE_IDS)
def test_fast_impl_matches_pycocotools_on_custom(
    registered, tmp_path, eval_calls, caplog, category_ids, max_dets, subset
):
    coco = make_custom_coco(category_ids)
    mapping = {c: i for i, c in enumerate(category_ids)}
    name = registered(coco, tmp_path, mapping)
    outputs = add_false_positives(make_outputs(coco, seed=4, mapping=mapping), coco, num=20)
    slow, _ = compare_paths(name, outputs, eval_calls, caplog, max_dets, subset)
    assert 0 < slow["AP"] < 100
    assert [k for k in slow if k.startswith("AP-")] == [f"AP-class{c}" for c in category_ids]


@needs_faster_coco_eval
def test_fast_impl_perfect_detections_give_ap_100(registered, tmp_path, eval_calls, caplog):
    coco = make_custom_coco((4, 17, 90))
    mapping = {4: 0, 17: 1, 90: 2}
    name = registered(coco, tmp_path, mapping)
    slow, fast = compare_paths(name, make_outputs(coco, mapping=mapping, perfect=True), eval_calls, caplog, 100, False)
    for bbox in (slow, fast):
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "AP-class4", "AP-class17", "AP-class90"):
            assert bbox[key] == 100.0, key


@needs_faster_coco_eval
def test_fast_impl_failure_is_raised_not_hidden(dataset, monkeypatch):
    from faster_coco_eval import COCOeval_faster

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(COCOeval_faster, "evaluate", broken)
    name, _, coco = dataset()
    evaluator = COCOEvaluator(name)
    feed(evaluator, make_outputs(coco))
    with pytest.raises(RuntimeError, match="boom") as info:
        evaluator.evaluate()
    assert any("use_fast_impl=False" in note for note in info.value.__notes__)


def test_without_faster_coco_eval_pycocotools_evaluates(dataset, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # how an absent package looks to the import system
    name, _, coco = dataset()
    outputs = make_outputs(coco)
    slow = evaluate_with(name, outputs, False, caplog)
    assert_same_results(slow, evaluate_with(name, outputs, True, caplog, expect="pycocotools"))


@needs_faster_coco_eval
def test_fast_impl_leaves_non_integer_ids_to_pycocotools(registered, tmp_path, eval_calls, caplog):
    coco = make_custom_coco((1, 2, 3))
    outputs = make_outputs(coco, mapping={1: 0, 2: 1, 3: 2})
    for item in coco["images"] + coco["annotations"]:
        key = "id" if "file_name" in item else "image_id"
        item[key] = f"img{item[key]}"
    name = registered(coco, tmp_path, {1: 0, 2: 1, 3: 2})
    outputs = {f"img{image_id}": out for image_id, out in outputs.items()}
    slow = evaluate_with(name, outputs, False, caplog)
    fast = evaluate_with(name, outputs, True, caplog, expect="pycocotools")
    assert "needs integer image, category and annotation ids" in caplog.text
    assert eval_calls == {"pycocotools": 2, "faster-coco-eval": 0}
    assert_same_results(slow, fast, tol=0.0)
