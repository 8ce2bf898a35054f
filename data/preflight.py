"""Pre-flight check of a dataset's image files, run when its dicts are collected, before training starts.

Without it, a missing, unreadable, truncated or mis-sized image is found only when the data loader reaches it,
possibly hours into training. :func:`check_images` looks at every image of the dataset dicts in parallel (a thread
pool: the work is file I/O and small header parsing, no pixel decoding) and reports every bad file in one
:class:`BadImagesError`.

Each image is checked, in this order, for:

- ``missing``: the file does not exist;
- ``truncated``: a cheap tail check. A JPEG must hold its end-of-image marker ``FF D9``, a PNG its ``IEND`` chunk.
  The last 32 bytes are searched first; when the marker is not there, the file's structure is walked (JPEG marker
  segments, PNG chunks) to find it, because data after the end marker is legal and common (the Exif standard asks
  readers to tolerate it; phones append maker data or a whole video) and must not stop training. Other formats
  are not tail-checked;
- ``cannot parse header``: :func:`data.mapper.read_image_size` fails (PIL cannot identify or parse the file);
- ``size mismatch``: the size that :func:`data.mapper.read_image` will return (EXIF orientation applied) differs
  from the dict's ``height`` / ``width``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from .mapper import read_image_size

__all__ = [
    "BadImagesError",
    "CANNOT_PARSE_HEADER",
    "DEFAULT_NUM_WORKERS",
    "ImageProblem",
    "MAX_PROCESSES",
    "MISSING",
    "PROCESS_POOL_MIN_IMAGES",
    "SIZE_MISMATCH",
    "TRUNCATED",
    "check_images",
]

logger = logging.getLogger(__name__)

MISSING = "missing"
TRUNCATED = "truncated"
CANNOT_PARSE_HEADER = "cannot parse header"
SIZE_MISMATCH = "size mismatch"
_KINDS = (MISSING, TRUNCATED, CANNOT_PARSE_HEADER, SIZE_MISMATCH)  # the order of the report

#: threads per process of the check; they hide file-system latency (the parsing itself holds the GIL, so more
#: threads than this only contend for it: measured on 2 cores, 4 threads beat 16 both with a cold and a warm cache)
DEFAULT_NUM_WORKERS = 4
#: datasets with at least this many images are also spread over processes (below it, starting them costs more)
PROCESS_POOL_MIN_IMAGES = 2000
#: at most this many processes
MAX_PROCESSES = 8
#: problems listed in the exception's message; the log gets all of them
MAX_LISTED = 50
_TAIL_BYTES = 32

_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_JPEG_MARKERS_WITHOUT_LENGTH = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7 (SOI/EOI are handled apart)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC


@dataclasses.dataclass(frozen=True)
class ImageProblem:
    """One bad image.

    Attributes:
        file_name: the image's path, as in its dataset dict.
        kind: one of ``"missing"``, ``"truncated"``, ``"cannot parse header"``, ``"size mismatch"``.
        detail: what exactly is wrong.
    """

    file_name: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file_name}: {self.detail}"


class BadImagesError(ValueError):
    """Raised by :func:`check_images` with every bad image of a dataset.

    Attributes:
        problems: one :class:`ImageProblem` per bad image, in dataset order (empty in a copy that only carries the
            message, such as the one ``instantiate`` raises from a config with the original as ``__cause__``).
    """

    def __init__(self, message: str, problems: Sequence[ImageProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def _jpeg_has_eoi(data: bytes) -> bool:
    """Whether walking the JPEG's marker segments from SOI reaches an EOI marker before the data ends.

    Segments with a length are skipped whole (an Exif thumbnail ends with its own ``FF D9``); in entropy-coded data
    ``FF`` is followed only by a stuffed ``00`` or a restart marker, so the next other marker ends the scan.
    """
    pos = 2
    while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker in (0x00, 0xFF) or marker in _JPEG_MARKERS_WITHOUT_LENGTH:
            pos += 1 if marker == 0xFF else 2  # fill byte / stuffed byte / restart marker
            continue
        if pos + 4 > len(data):
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def _png_has_iend(f, size: int) -> bool:
    """Whether walking the PNG's chunks (8-byte headers, data skipped) reaches IEND before the file ends."""
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= size:
        f.seek(pos)
        header = f.read(8)
        if header[4:8] == b"IEND":
            return True
        pos += 12 + int.from_bytes(header[:4], "big")
    return False


def _truncation(path: str) -> str | None:
    """Why the file is truncated, or None when it is complete or its format has no cheap tail check.

    Raises:
        OSError: the file cannot be opened or read (``FileNotFoundError`` when it does not exist).
    """
    with open(path, "rb") as f:
        head = f.read(len(_PNG_SIGNATURE))
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
        if head.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
            f.seek(0)
            if not _jpeg_has_eoi(f.read()):
                return "JPEG data ends without the end-of-image marker FF D9: the file is truncated"
        elif head == _PNG_SIGNATURE and _PNG_IEND not in tail and not _png_has_iend(f, size):
            return "PNG data ends without its IEND chunk: the file is truncated"
    return None


def _reason(error: Exception, path: str) -> str:
    """The message of ``error`` (or of its cause) without the file's path, which the report shows already."""
    message = str(error.__cause__ or error)
    return message.replace(f": {path!r}", "").replace(f" {path!r}", "").replace(path, "the file")


def _size_problem(record: dict, size: tuple[int, int]) -> ImageProblem | None:
    if record.get("height") is None or record.get("width") is None:
        return None
    expected = int(record["height"]), int(record["width"])
    if expected == size:
        return None
    swapped = " (height and width swapped: an EXIF orientation the json ignores?)" if size == expected[::-1] else ""
    detail = (
        f"json says {expected[0]} x {expected[1]}, file is {size[0]} x {size[1]} "
        f"(height x width, EXIF orientation applied){swapped}"
    )
    return ImageProblem(record["file_name"], SIZE_MISMATCH, detail)


def _check_one(record: dict) -> ImageProblem | None:
    """The problem of one dataset dict's image, or None."""
    path = os.fspath(record["file_name"])
    try:
        truncated = _truncation(path)
        if truncated:
            return ImageProblem(path, TRUNCATED, truncated)
        size = read_image_size(path)
    except FileNotFoundError:
        return ImageProblem(path, MISSING, "file not found")
    except (OSError, ValueError) as e:  # unreadable (permissions, a folder) or not an image PIL can parse
        return ImageProblem(path, CANNOT_PARSE_HEADER, _reason(e, path))
    return _size_problem(record, size)


def _unique(dataset_dicts: Iterable[dict]) -> list[dict]:
    """One dict per distinct (file, height, width): concatenated datasets may list a file twice."""
    seen = {}
    for d in dataset_dicts:
        seen.setdefault((d["file_name"], d.get("height"), d.get("width")), d)
    return list(seen.values())


def _grouped_lines(problems: Sequence[ImageProblem], max_listed: int) -> list[str]:
    """Report lines: per kind a header with its count, then its files while fewer than ``max_listed`` are shown."""
    lines, listed = [], 0
    for kind in _KINDS:
        group = [p for p in problems if p.kind == kind]
        if not group:
            continue
        shown = group[: max(0, max_listed - listed)]
        listed += len(shown)
        lines.append(f"  {kind} ({len(group)}):")
        lines.extend(f"    {p}" for p in shown)
        if len(shown) < len(group):
            lines.append(f"    ... and {len(group) - len(shown)} more")
    return lines


def _message(problems: Sequence[ImageProblem], num_checked: int, dataset_name: str | None) -> str:
    where = f" of dataset '{dataset_name}'" if dataset_name else ""
    lines = [f"{len(problems)} of {num_checked} images{where} cannot be used for training:"]
    lines += _grouped_lines(problems, MAX_LISTED)
    if len(problems) > MAX_LISTED:
        lines.append(f"(only the first {MAX_LISTED} are listed here; the log lists all {len(problems)})")
    lines.append(
        "Fix or remove these images and their annotations, or skip this check with check_images=False of "
        "get_detection_dataset_dicts (in a LazyConfig: dataloader.train.dataset.check_images=False, "
        "dataloader.test.dataset.check_images=False)."
    )
    return "\n".join(lines)


def _check_all(records: Sequence[dict], threads: int) -> list[ImageProblem]:
    """The problems of ``records``, checked by ``threads`` threads of this process (in the records' order)."""
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(records))), thread_name_prefix="check_images") as pool:
        return [p for p in pool.map(_check_one, records) if p is not None]


def _process_pool_size(num_images: int, num_processes: int | None) -> int:
    """Processes to spread the check over: header parsing holds the GIL, so big datasets use every core."""
    if num_processes is not None:
        return max(1, num_processes)
    if num_images < PROCESS_POOL_MIN_IMAGES or "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_PROCESSES))


def _check_in_processes(records: Sequence[dict], processes: int, threads: int) -> list[ImageProblem]:
    """:func:`_check_all` over ``processes`` forked processes, each on an interleaved share of the records."""
    small = [{k: r.get(k) for k in ("file_name", "height", "width")} for r in records]  # little to pickle
    shares = [small[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("fork")) as pool:
        found = list(pool.map(_check_all, shares, [threads] * processes))
    order = {r["file_name"]: i for i, r in enumerate(small)}
    return sorted((p for share in found for p in share), key=lambda p: order[p.file_name])


def check_images(
    dataset_dicts: Sequence[dict],
    *,
    dataset_name: str | None = None,
    num_workers: int | None = None,
    num_processes: int | None = None,
) -> None:
    """Checks that every image of ``dataset_dicts`` exists, is complete, parses, and has the dict's size.

    No pixels are decoded; see the module docstring for the checks. The files are read by threads (they hide
    file-system latency); a dataset of :data:`PROCESS_POOL_MIN_IMAGES` images or more is also spread over
    forked processes, one per core up to :data:`MAX_PROCESSES`, because parsing headers holds the GIL. Logs one
    info line with the number of images checked and the time taken.

    Args:
        dataset_dicts: dataset dicts with ``file_name``, ``height`` and ``width`` (the size is not compared when
            a dict lacks them).
        dataset_name: named in the messages.
        num_workers: threads per process; None uses :data:`DEFAULT_NUM_WORKERS`.
        num_processes: processes; None chooses by the dataset's size (see above), 1 checks in this process.

    Raises:
        BadImagesError: some images are bad; its message lists them by kind (the first :data:`MAX_LISTED`, with
            the full list in the log), its ``problems`` attribute holds all of them.
    """
    records = _unique(dataset_dicts)
    threads = num_workers or DEFAULT_NUM_WORKERS
    processes = min(_process_pool_size(len(records), num_processes), max(1, len(records)))
    start = time.perf_counter()
    if processes > 1:
        problems = _check_in_processes(records, processes, threads)
    else:
        problems = _check_all(records, threads)
    seconds = time.perf_counter() - start
    where = f" of dataset '{dataset_name}'" if dataset_name else ""
    logger.info(
        f"Checked {len(records)} images{where} in {seconds:.2f} s ({len(records) / max(seconds, 1e-9):.0f} images/s, "
        f"{processes} process(es) x {threads} threads): {len(problems)} bad"
    )
    if not problems:
        return
    if len(problems) > MAX_LISTED:
        logger.error(f"All {len(problems)} bad images{where}:\n" + "\n".join(f"  {p.kind}: {p}" for p in problems))
    raise BadImagesError(_message(problems, len(records), dataset_name), problems)
