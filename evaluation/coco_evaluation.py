"""COCO box AP with pycocotools (or faster-coco-eval where it is installed).

The evaluator turns model outputs (``boxes`` xyxy in pixels of the original
image, ``scores``, contiguous ``labels``) into COCO results (xywh boxes,
original category ids), gathers them on the main process, writes
``coco_instances_results.json`` and runs ``COCOeval`` on the processed images.

faster-coco-eval (optional, C++) gives the same numbers as pycocotools up to float rounding and is used
where it is installed unless ``use_fast_impl=False``; the log says which one evaluated. Its ``COCOeval``
fills no ``evalImgs``, so code that needs those (none here) must use pycocotools.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import importlib.util
import io
import itertools
import logging
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from core import comm
from core.fileio import write_json
from data.catalog import MetadataCatalog

from .evaluator import DatasetEvaluator

__all__ = ["COCOEvaluator"]

logger = logging.getLogger(__name__)

_SUPPORTED_TASKS = ("bbox",)
RESULTS_FILE = "coco_instances_results.json"
PYCOCOTOOLS = "pycocotools"
FASTER_COCO_EVAL = "faster-coco-eval"


class COCOEvaluator(DatasetEvaluator):
    """Box AP/AR of a registered COCO-style dataset.

    Args:
        dataset_name: a name registered in ``DatasetCatalog``/``MetadataCatalog``.
            Its metadata should have ``json_file`` (else the dataset is converted
            to COCO json first), ``thing_classes`` and
            ``thing_dataset_id_to_contiguous_id``.
        tasks: tasks to evaluate; only ``"bbox"`` is supported (``None`` means that).
        distributed: gather the predictions of all ranks and evaluate on rank 0;
            if False every rank evaluates what it processed itself.
        output_dir: where ``coco_instances_results.json`` (and a converted json)
            go; ``None`` writes no results file.
        max_dets_per_image: the last ``maxDets`` of COCOeval (AP and AR<max>).
        use_fast_impl: use faster-coco-eval's ``COCOeval_faster`` where it is installed (pycocotools
            otherwise, and for ground truth with non-integer ids). Same numbers; an error of it is raised,
            never hidden by a fallback.
        allow_cached_coco: reuse an earlier converted json in ``output_dir``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = ("bbox",),
        distributed: bool = True,
        output_dir: str | None = None,
        max_dets_per_image: int = 100,
        use_fast_impl: bool = True,
        allow_cached_coco: bool = True,
    ) -> None:
        self._tasks = _check_tasks(tasks)
        if max_dets_per_image <= 10:  # maxDets is [1, 10, max_dets_per_image]: AR10 would be reported twice
            raise ValueError(f"max_dets_per_image must be greater than 10, got {max_dets_per_image}")
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets = [1, 10, int(max_dets_per_image)]
        self._use_fast_impl = use_fast_impl
        self._allow_cached_coco = allow_cached_coco
        self._metadata = MetadataCatalog.get(dataset_name)
        self._coco: COCO | None = None
        self._label_to_dataset_id: dict[int, int] | None = None
        self._predictions: list[dict] = []

    # ------------------------------------------------------------------ setup
    @property
    def _contiguous_to_dataset_id(self) -> dict[int, int]:
        """Contiguous label -> the dataset's category id, read from the metadata when first needed.

        Not at construction: the metadata of a dataset registered with ``{}`` comes from its json, and reading
        it late keeps the mapping right whatever the order in which the evaluator and the dataset are built.
        """
        if self._label_to_dataset_id is None:
            self._label_to_dataset_id = self._label_mapping()
        return self._label_to_dataset_id

    def _label_mapping(self) -> dict[int, int]:
        """Contiguous label -> original COCO category id (identity if the metadata has no mapping)."""
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            classes = self._metadata.get("thing_classes")
            num = len(classes) if classes is not None else len(self._coco_api().getCatIds())
            return {i: i for i in range(num)}
        inverse = {int(c): int(d) for d, c in mapping.items()}
        if sorted(inverse) != list(range(len(mapping))):
            raise ValueError(
                f"thing_dataset_id_to_contiguous_id of dataset '{self._dataset_name}' does not map onto "
                f"0..{len(mapping) - 1}: {mapping}"
            )
        return inverse

    def _coco_api(self) -> COCO:
        """The ground truth, loaded on first use (ranks that never evaluate never load it)."""
        if self._coco is None:
            json_file = self._metadata.get("json_file") or self._convert_to_json()
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(json_file)
        return self._coco

    def _convert_to_json(self) -> str:
        from data.coco import convert_to_coco_json

        rank = comm.get_rank()
        suffix = f".rank{rank}" if rank else ""
        directory = self._output_dir or tempfile.mkdtemp(prefix="coco_eval_")
        name = self._dataset_name.replace(os.sep, "_")
        path = os.path.join(directory, f"{name}_coco_format{suffix}.json")
        if not (self._allow_cached_coco and os.path.exists(path)):
            logger.info("Converting dataset '%s' to COCO format in %s", self._dataset_name, path)
            os.makedirs(directory, exist_ok=True)
            convert_to_coco_json(self._dataset_name, path)
        else:
            logger.info("Using the cached COCO json %s of dataset '%s'", path, self._dataset_name)
        return path

    # ---------------------------------------------------------------- process
    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Converts each image's output to COCO results (see the module docstring).

        Raises:
            KeyError: an input has no ``image_id`` or an output lacks a key.
            ValueError: shapes disagree, a value is not finite, or a label is outside 0..C-1.
        """
        if len(inputs) != len(outputs):
            raise ValueError(f"Got {len(inputs)} inputs but {len(outputs)} outputs")
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            self._predictions.append({"image_id": image_id, "instances": self._to_coco_results(out, image_id)})

    def _to_coco_results(self, output: dict, image_id: Any) -> list[dict]:
        boxes, scores, labels = _unpack_output(output, image_id)
        bad = [int(v) for v in labels.tolist() if int(v) not in self._contiguous_to_dataset_id]
        if bad:
            raise ValueError(
                f"Predicted label {bad[0]} of image_id {image_id} is outside "
                f"0..{len(self._contiguous_to_dataset_id) - 1} (dataset '{self._dataset_name}')"
            )
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        return [
            {
                "image_id": image_id,
                "category_id": self._contiguous_to_dataset_id[int(label)],
                "bbox": [float(v) for v in box],
                "score": float(score),
            }
            for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist())
        ]

    # --------------------------------------------------------------- evaluate
    def evaluate(self, img_ids: Sequence | None = None) -> OrderedDict | dict:
        """Evaluates what was processed (on rank 0 only when ``distributed``).

        Args:
            img_ids: evaluate only these images (default: every processed image).

        Returns:
            ``{"bbox": {"AP", "AP50", ..., "AR100", ..., "AP-<class>"...}}`` in
            percent (NaN where undefined); ``{}`` on other ranks, when nothing was
            processed, or when the json has no annotations.
        """
        predictions = self._gathered_predictions()
        if predictions is None:
            return {}
        if not predictions:
            logger.warning("[COCOEvaluator] Did not receive valid predictions.")
            return {}
        predictions = _deduplicate(predictions)
        coco_results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_FILE)
            logger.info("Saving results to %s", path)
            write_json(coco_results, path)
        if "annotations" not in self._coco_api().dataset:
            logger.info("The json of '%s' has no annotations; results were only saved", self._dataset_name)
            return {}
        image_ids = sorted({p["image_id"] for p in predictions}) if img_ids is None else list(img_ids)
        return OrderedDict(bbox=self._evaluate_boxes(coco_results, image_ids))

    def _gathered_predictions(self) -> list[dict] | None:
        """All ranks' predictions on the main process; ``None`` on ranks that do not evaluate."""
        if not self._distributed:
            return self._predictions
        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain.from_iterable(gathered))

    def _evaluate_boxes(self, coco_results: list[dict], image_ids: list) -> dict[str, float]:
        coco_gt = self._coco_api()
        unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()), key=str)
        if unknown:
            raise ValueError(f"image_id(s) {unknown[:5]} are not in the ground truth of dataset '{self._dataset_name}'")
        if not coco_results:
            logger.warning("[COCOEvaluator] The model produced no detections on %d images", len(image_ids))
        coco_eval = _run_cocoeval(coco_gt, coco_results, image_ids, self._max_dets, self._use_fast_impl)
        results = _summary_metrics(coco_eval)
        per_class = self._per_class_ap(coco_eval)
        _log_results(results, per_class)
        results.update({f"AP-{name}": ap for name, ap in per_class.items()})
        return results

    def _per_class_ap(self, coco_eval: _EvaluatedCOCO) -> dict[str, float]:
        """AP (IoU 0.5:0.95, all areas, last maxDets) per class, in percent, keyed by class name."""
        dataset_to_contiguous = {d: c for c, d in self._contiguous_to_dataset_id.items()}
        names = self._metadata.get("thing_classes")
        precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
        per_class = {}
        for k, cat_id in enumerate(coco_eval.params.catIds):
            contiguous = dataset_to_contiguous.get(cat_id)
            if contiguous is None:
                continue
            name = names[contiguous] if names is not None else self._coco_api().loadCats(cat_id)[0]["name"]
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            per_class[name] = float(np.mean(values)) * 100 if values.size else float("nan")
        return per_class


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...]:
    tasks = ("bbox",) if tasks is None else tuple(tasks)
    unsupported = [t for t in tasks if t not in _SUPPORTED_TASKS]
    if unsupported:
        raise ValueError(
            f"COCOEvaluator supports tasks {_SUPPORTED_TASKS} only (models output boxes); got {unsupported}"
        )
    return tasks


def _unpack_output(output: dict, image_id: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``boxes`` [N, 4] float64, ``scores`` [N] float64 and ``labels`` [N] int64, on the CPU, checked."""
    missing = [k for k in ("boxes", "scores", "labels") if k not in output]
    if missing:
        raise KeyError(f"Output of image_id {image_id} lacks {missing}; it has {sorted(output)}")
    boxes = torch.as_tensor(output["boxes"]).detach().cpu().to(torch.float64).reshape(-1, 4)
    scores = torch.as_tensor(output["scores"]).detach().cpu().to(torch.float64).reshape(-1)
    labels = torch.as_tensor(output["labels"]).detach().cpu().reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"Output of image_id {image_id} has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels"
        )
    if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
        raise ValueError(f"Output of image_id {image_id} has non-finite boxes or scores")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError(f"Output of image_id {image_id} has non-integer labels {labels.tolist()}")
    return boxes, scores, labels.to(torch.int64)


def _deduplicate(predictions: list[dict]) -> list[dict]:
    """Keeps the first prediction of each image (a padded sampler may run an image twice)."""
    seen, unique = set(), []
    for p in predictions:
        if p["image_id"] not in seen:
            seen.add(p["image_id"])
            unique.append(p)
    if len(unique) < len(predictions):
        logger.warning("[COCOEvaluator] %d duplicate image predictions dropped", len(predictions) - len(unique))
    return unique


def _load_results(coco_gt: COCO, coco_results: list[dict]) -> COCO:
    """``coco_gt.loadRes`` that leaves ``coco_results`` untouched and accepts an empty list.

    ``loadRes`` of either implementation sets keys (``id``, ``area``, ``segmentation``...) of each result, so it
    gets copies of the dicts and boxes (much cheaper than a deep copy, which took half of faster-coco-eval's time).
    """
    if coco_results:
        return coco_gt.loadRes([{**r, "bbox": list(r["bbox"])} for r in coco_results])
    return _coco_from_dict(type(coco_gt), {**coco_gt.dataset, "annotations": []})


def _coco_from_dict(coco_cls: type, dataset: dict) -> COCO:
    coco = coco_cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


class _EvaluatedCOCO(Protocol):
    """What is read of an evaluated bbox COCOeval of either implementation (faster-coco-eval's is no subclass)."""

    params: Any  # imgIds, catIds, iouThrs, areaRngLbl, maxDets
    eval: dict[str, Any]  # "precision" [T, R, K, A, M] and "recall" [T, K, A, M]; -1 where undefined


def _cocoeval_impl(coco_gt: COCO, use_fast_impl: bool) -> str:
    """The implementation to evaluate ``coco_gt`` with: faster-coco-eval if asked for, installed and able.

    Only its absence (or ids it cannot take) selects pycocotools; an installed package that fails to import
    raises, like any other failure of it.
    """
    if not use_fast_impl:
        return PYCOCOTOOLS
    if importlib.util.find_spec("faster_coco_eval") is None:
        logger.debug("faster-coco-eval is not installed")
        return PYCOCOTOOLS
    bad = _non_integer_ids(coco_gt)
    if bad:
        logger.info("faster-coco-eval needs integer image, category and annotation ids, not %s; using pycocotools", bad)
        return PYCOCOTOOLS
    return FASTER_COCO_EVAL


def _non_integer_ids(coco_gt: COCO, limit: int = 3) -> list:
    """Up to ``limit`` image, category or annotation ids of ``coco_gt`` that are not integers."""
    ids = itertools.chain(coco_gt.imgs, coco_gt.cats, coco_gt.anns)
    return list(itertools.islice((i for i in ids if not _is_integer(i)), limit))


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _new_cocoeval(coco_gt: COCO, coco_results: list[dict], impl: str) -> _EvaluatedCOCO:
    """A bbox COCOeval of ``impl`` on the ground truth and (a copy of) the results, not yet evaluated."""
    if impl == PYCOCOTOOLS:
        return COCOeval(coco_gt, _load_results(coco_gt, coco_results), "bbox")
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster

    gt = _coco_from_dict(FastCOCO, copy.deepcopy(coco_gt.dataset))  # it edits annotations in place
    return COCOeval_faster(gt, _load_results(gt, coco_results), "bbox", print_function=logger.debug)


def _run_cocoeval(
    coco_gt: COCO, coco_results: list[dict], image_ids: list, max_dets: list[int], use_fast_impl: bool
) -> _EvaluatedCOCO:
    """Runs evaluate + accumulate of a bbox COCOeval on ``image_ids``; returns the evaluated object.

    With ``use_fast_impl``, faster-coco-eval's ``COCOeval_faster`` runs where it is installed: its
    ``eval["precision"]`` and ``eval["recall"]`` have pycocotools' shapes and values (up to float rounding,
    1e-16), but it fills no ``evalImgs``. The implementation used is logged (info).

    Raises:
        Exception: whatever faster-coco-eval raises, with a note naming ``use_fast_impl=False``; it never falls
            back silently, as that would hide a bug behind a slower run.
    """
    impl = _cocoeval_impl(coco_gt, use_fast_impl)
    logger.info("Evaluating bbox on %d images with %s %s", len(image_ids), impl, importlib.metadata.version(impl))
    try:
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            coco_eval = _new_cocoeval(coco_gt, coco_results, impl)
            coco_eval.params.imgIds = list(image_ids)
            coco_eval.params.maxDets = list(max_dets)
            coco_eval.evaluate()
            coco_eval.accumulate()
    except Exception as e:
        if impl == FASTER_COCO_EVAL:
            e.add_note("faster-coco-eval failed; COCOEvaluator(use_fast_impl=False) evaluates with pycocotools")
        raise
    logger.debug("COCOeval (%s) output:\n%s", impl, captured.getvalue())
    return coco_eval


def _summary_metrics(coco_eval: _EvaluatedCOCO) -> dict[str, float]:
    """The 12 COCO summary stats in percent (NaN where COCOeval reports -1), like ``summarize``."""
    max_dets = coco_eval.params.maxDets
    specs = [
        ("AP", True, None, "all", max_dets[-1]),
        ("AP50", True, 0.5, "all", max_dets[-1]),
        ("AP75", True, 0.75, "all", max_dets[-1]),
        ("APs", True, None, "small", max_dets[-1]),
        ("APm", True, None, "medium", max_dets[-1]),
        ("APl", True, None, "large", max_dets[-1]),
        *[(f"AR{m}", False, None, "all", m) for m in max_dets],
        ("ARs", False, None, "small", max_dets[-1]),
        ("ARm", False, None, "medium", max_dets[-1]),
        ("ARl", False, None, "large", max_dets[-1]),
    ]
    results = {}
    for name, is_ap, iou_thr, area, max_det in specs:
        value = _summarize(coco_eval, is_ap, iou_thr, area, max_det)
        results[name] = value * 100 if value > -1 else float("nan")
    return results


def _summarize(coco_eval: _EvaluatedCOCO, is_ap: bool, iou_thr: float | None, area: str, max_det: int) -> float:
    """Mean of the defined (> -1) precision or recall entries of one setting; -1 if none."""
    params = coco_eval.params
    values = coco_eval.eval["precision" if is_ap else "recall"]  # [T, R, K, A, M] or [T, K, A, M]
    if iou_thr is not None:
        values = values[np.isclose(params.iouThrs, iou_thr)]
    a, m = params.areaRngLbl.index(area), list(params.maxDets).index(max_det)
    values = values[..., a, m]
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def _log_results(results: dict[str, float], per_class: dict[str, float]) -> None:
    table = tabulate(
        [list(results.values())],
        headers=list(results),
        tablefmt="pipe",
        floatfmt=".3f",
        stralign="center",
        numalign="center",
    )
    logger.info("Evaluation results for bbox:\n%s", table)
    if any(math.isnan(v) for v in results.values()):
        logger.info("Some metrics cannot be computed and are shown as NaN.")
    if per_class:
        logger.info("Per-category bbox AP:\n%s", _per_class_table(per_class))


def _per_class_table(per_class: dict[str, float], max_pairs: int = 3) -> str:
    """A pipe table with up to ``max_pairs`` (category, AP) column pairs per row."""
    pairs = min(max_pairs, len(per_class))
    flat = list(itertools.chain.from_iterable(per_class.items()))
    rows = itertools.zip_longest(*[flat[i :: pairs * 2] for i in range(pairs * 2)])
    return tabulate(list(rows), headers=["category", "AP"] * pairs, tablefmt="pipe", floatfmt=".3f", numalign="left")
