"""Dataset parsers: turn a re-ID dataset folder into records, without decoding any image.

Follows torchreid's data contract (Zhou & Xiang, "Torchreid: A Library for Deep Learning Person
Re-Identification in Pytorch", arXiv:1910.10093; ``torchreid/data/datasets/image/*.py``):
a record is ``(img_path, pid, camid)``, junk identities (-1) are dropped by the parser,
cameras are 0-based inside, and a summary table gives ids / images / cameras per subset.
Unlike torchreid, which ``assert``s on a bad name and ignores junk silently, every file under
the dataset root ends up in exactly one of three lists of :class:`ParseResult`:

- ``records``: usable images (:class:`Record`), ``path`` relative to the root (posix),
  ``pid`` the original identity (not relabelled), ``camid`` 0-based, ``orig_camid`` as
  written in the name, ``split`` one of train / query / gallery.
- ``quarantined``: a problem to report (:data:`QUARANTINE_REASONS`).
- ``skipped``: a file left out by a rule, not an error (:data:`SKIP_REASONS`).

``counts`` holds ``records``, ``quarantined``, ``skipped``, images per split,
``quarantined.<reason>``, ``skipped.<reason>``, ``distractors_kept`` and ``junk_dropped``.
Output order is deterministic on every file system: records sort by (split, path) and
folders are walked in code-point order of their names. Images are checked later, once, by
:func:`reidaug.data.images.decode_image` (see :func:`decode_records`), whose reasons
(``missing``, ``dangling-symlink``, ``zero-byte``, ``not-an-image``, ``truncated``,
``too-large``, ``unreadable``) join the quarantine.

Quarantine reasons found while parsing:

- ``unparseable-name``: the file name does not follow the format (``l0155_c3s1_...jpg``,
  ``bb.jpg``), or an identity folder name is not an integer.
- ``unknown-camera``: the camera number is outside the format's range.
- ``junk-id``: identity -1 (Market-1501's junk boxes); dropped, as torchreid does, but
  reported and counted (``junk_dropped``).
- ``missing-from-list``: a list file or manifest names an image that does not exist.
- ``duplicate-entry``: a list file or manifest names the same image twice (first kept).
- ``bad-manifest-row``: a list/manifest line is not ``<path> <pid>`` / ``path,pid,camid``.
- ``not-a-file``: a folder named like an image (``0006_c1s1_009983_00.jpg/``).

For the last two, ``path`` is the line (``list_train.txt:12``), not the image: the image
itself is a record (or ``not-in-list``), so every file under the root appears exactly once.

Skip reasons: ``not-an-image-extension`` (``Thumbs.db``, ``*.txt``: image extensions are
.jpg .jpeg .png .bmp .webp .tif .tiff, any case), ``hidden-file`` (names starting with ``.``,
e.g. ``.DS_Store`` or AppleDouble ``._x.jpg``), ``not-in-list`` / ``not-in-manifest`` (an
image on disk that the list/manifest does not name), ``val-not-merged`` (MSMT17 val images
when ``merge_val`` is off).

Per-format rules (``PARSERS``):

- ``market1501``: ``bounding_box_train/`` -> train, ``query/`` -> query,
  ``bounding_box_test/`` -> gallery (a ``Market-1501-v15.09.15/`` level is entered). Names
  ``PPPP_cCsS_FFFFFF_BB.jpg``; cameras 1..6; pid 0000 (distractors) kept and counted in
  ``distractors_kept``, as torchreid keeps them (it excludes them only at evaluation).
- ``dukemtmc-reid``: same folders (a ``DukeMTMC-reID/`` level is entered); names
  ``PPPP_cC_fFFFFFFF.jpg``; cameras 1..8.
- ``msmt17``: ``list_{train,val,query,gallery}.txt`` with ``<relpath> <pid>`` lines, paths
  relative to ``train/`` and ``test/`` (V1) or ``mask_train_v2/`` and ``mask_test_v2/``
  (V2); a ``MSMT17_V1/`` or ``MSMT17_V2/`` level is entered. Camera = third ``_`` field of
  the name (``0000_000_01_0303morning_0015_0.jpg`` -> camera 01), 1..15. The list's pid is
  used, as torchreid does; train and test pids are separate namespaces (both start at 0).
  ``merge_val`` (default on) adds val to train, giving the official 32,621 training images;
  torchreid adds it only with ``combineall``.
- ``cuhk03-np``: ``<variant>/{bounding_box_train,query,bounding_box_test}`` with
  ``variant`` ``detected`` (default, as torchreid) or ``labeled``; names ``PPPP_cC_N.png``;
  cameras 1..2.
- ``cuhk01``: ``images/PPPPIII.png`` (or torchreid's ``campus/``); image index 001/002 ->
  camera 1 (camid 0), 003/004 -> camera 2 (camid 1). No official split: with
  ``split_method: sha256`` (default) identities are ranked by sha256 of ``"<split_seed>:<pid>"``
  (the same on every Python/NumPy version); with ``split_method: numpy`` the sorted ids are
  permuted by ``numpy.random.default_rng(split_seed).permutation``, which reproduces
  ``shared/data/cuhk01/splits/rng0.csv`` (the yardstick split) at seed 0. The first
  ``num_train_ids`` (default 485, torchreid's 971 // 2) go to train, the other 486 are test
  ids whose ``query_camera`` images (default camid 0, torchreid's split 0) are the query and
  whose other-camera images are the gallery.
- ``folder``: ``<root>/<identity>/**/<image>``; the folder name is the pid and must be an
  integer (``folder_ids="int"``, kept as is) unless ``folder_ids="sorted"`` numbers the
  folders 0..N-1 in sorted order (the name is kept in ``extra``). Camera from
  ``camera_regex`` (a named group ``cam`` searched in the file name) minus ``camera_base``;
  without it every image is camera 0. Or a CSV ``manifest`` with header
  ``path,pid,camid[,split]`` (paths relative to the root; other columns ignored) replaces
  the folder walk. Split from the manifest's ``split`` column, else everything is train.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, get_args, get_origin, get_type_hints

from reidaug.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_REASONS,
    DecodedImage,
    ImageCheckError,
    decode_image,
)
from reidaug.errors import ConfigError, DataError, did_you_mean, unknown_name

logger = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

PARSE_REASONS: dict[str, str] = {
    "unparseable-name": "the file or folder name does not follow the dataset's format",
    "unknown-camera": "the camera number is outside the dataset's camera range",
    "junk-id": "identity -1 marks a junk box; dropped from every subset",
    "missing-from-list": "a list file or manifest names an image that does not exist",
    "duplicate-entry": "a list file or manifest names the same image twice",
    "bad-manifest-row": "a list/manifest line does not have the expected fields",
    "not-a-file": "a folder named like an image",
    "too-small": "smaller than ingest's min_size",
}
QUARANTINE_REASONS: dict[str, str] = {**PARSE_REASONS, **IMAGE_REASONS}
SKIP_REASONS: dict[str, str] = {
    "not-an-image-extension": "not an image by its extension (Thumbs.db, notes, lists)",
    "hidden-file": "a hidden file (name starts with '.')",
    "not-in-list": "an image on disk that no list file names",
    "not-in-manifest": "an image on disk that the manifest does not name",
    "val-not-merged": "an MSMT17 validation image, left out because merge_val is off",
}


@dataclass(frozen=True)
class Record:
    """One usable image: torchreid's ``(img_path, pid, camid)`` plus where it came from."""

    path: str  # relative to the dataset root, posix separators
    pid: int  # original identity, not relabelled
    camid: int  # 0-based
    split: str  # "train" | "query" | "gallery"
    orig_camid: int  # the camera number as written in the name or list
    frame: int | None = None
    extra: tuple[tuple[str, str], ...] = ()  # format-specific fields, e.g. (("sequence", "1"),)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:  # parsers build records; a wrong split is a bug here
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")


@dataclass(frozen=True)
class Quarantined:
    """A file that is not a record: ``reason`` is a key of QUARANTINE_REASONS or SKIP_REASONS."""

    path: str  # relative to the dataset root, posix separators
    reason: str
    detail: str


@dataclass
class ParseResult:
    records: list[Record]
    quarantined: list[Quarantined]
    counts: dict[str, int]
    skipped: list[Quarantined] = field(default_factory=list)


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class MarketOptions:
    splits: tuple[str, ...] = SPLITS  # which subset folders to read; each must exist


@dataclass(frozen=True)
class DukeOptions:
    splits: tuple[str, ...] = SPLITS


@dataclass(frozen=True)
class MSMT17Options:
    merge_val: bool = True  # list_val.txt joins train (official 32,621 training images)
    version: Literal["auto", "v1", "v2"] = "auto"


@dataclass(frozen=True)
class CUHK03NPOptions:
    variant: Literal["detected", "labeled"] = "detected"
    splits: tuple[str, ...] = SPLITS


@dataclass(frozen=True)
class CUHK01Options:
    num_train_ids: int = 485
    split_seed: int = 0
    query_camera: int = 0  # 0-based camera of the test ids' query images; the other is gallery
    split_method: Literal["sha256", "numpy"] = "sha256"  # numpy: default_rng(seed).permutation (rng0.csv)


@dataclass(frozen=True)
class FolderOptions:
    camera_regex: str | None = None  # searched in the file name; needs a named group "cam"
    camera_base: int = 1  # camid = cam - camera_base (1 for 1-based names)
    manifest: str | None = None  # CSV "path,pid,camid[,split]", relative to root or absolute
    folder_ids: Literal["int", "sorted"] = "int"
    shared_ids: bool = False  # a protocol where test identities also train (otherwise an error)


# ----------------------------------------------------------------------------- collecting


class _Collector:
    """Accumulates records, quarantine and skip entries, and builds the counts."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.records: list[Record] = []
        self.quarantined: list[Quarantined] = []
        self.skipped: list[Quarantined] = []
        self.counts: Counter[str] = Counter()
        self.listed: set[str] = set()  # paths a list file or manifest has named

    def first_listing(self, root: Path, path: str, where: str, missing: str) -> bool:
        """True when a list names ``path`` for the first time and the file exists; else quarantine
        it as ``duplicate-entry`` (at ``where``) or ``missing-from-list`` (detail ``missing``)."""
        if path in self.listed:
            self.quarantine(where, "duplicate-entry", f"lists {path} again; first kept")
            return False
        self.listed.add(path)
        if not os.path.lexists(root / path):
            self.quarantine(path, "missing-from-list", missing)
            return False
        return True

    def quarantine(self, path: str, reason: str, detail: str) -> None:
        self.quarantined.append(Quarantined(path, reason, detail))

    def skip(self, path: str, reason: str, detail: str) -> None:
        self.skipped.append(Quarantined(path, reason, detail))

    def result(self) -> ParseResult:
        records = sorted(self.records, key=lambda r: (SPLITS.index(r.split), r.path))
        quarantined = sorted(self.quarantined, key=lambda q: (q.path, q.reason))
        skipped = sorted(self.skipped, key=lambda q: (q.path, q.reason))
        counts = _base_counts(records, quarantined, skipped)
        counts.update(self.counts)
        counts["junk_dropped"] = counts.get("quarantined.junk-id", 0)
        counts.setdefault("distractors_kept", 0)
        result = ParseResult(records, quarantined, dict(sorted(counts.items())), skipped)
        logger.info(
            "%s: %d records (%s), %d quarantined, %d skipped",
            self.fmt,
            len(records),
            ", ".join(f"{s} {counts[s]}" for s in SPLITS),
            len(quarantined),
            len(skipped),
        )
        return result


def _base_counts(
    records: list[Record], quarantined: list[Quarantined], skipped: list[Quarantined]
) -> dict[str, int]:
    counts = {"records": len(records), "quarantined": len(quarantined), "skipped": len(skipped)}
    counts.update({split: sum(r.split == split for r in records) for split in SPLITS})
    counts.update(Counter(f"quarantined.{q.reason}" for q in quarantined))
    counts.update(Counter(f"skipped.{s.reason}" for s in skipped))
    return counts


def _walk(folder: Path) -> list[Path]:
    """Every non-directory entry under ``folder`` (dangling symlinks included), sorted, and every
    *folder named like an image* (``0006_c1s1_009983_00.jpg/``, as a botched extraction leaves):
    :func:`_triage` quarantines those, so no name that looks like an image goes unreported.

    Symlinked folders are followed (so their images are not lost), each real folder once.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop or a second link to the same folder
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in filenames)
        found.extend(Path(dirpath) / name for name in dirnames if looks_like_image(name))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def looks_like_image(name: str) -> bool:
    """A name with an image extension (any case), e.g. ``0001_c1s1_000151_01.JPG``."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _triage(path: Path, root: Path, out: _Collector) -> bool:
    """True when ``path`` is an image candidate; otherwise record why it is skipped (or, for a
    folder named like an image, quarantined)."""
    name = path.name
    if path.is_dir():
        out.quarantine(_rel(path, root), "not-a-file",
                       f"{_rel(path, root)} is a folder named like an image; an unpacked archive or a copy gone "
                       "wrong? Fix: replace it with the image file, or rename it")
        return False
    if name.startswith("."):
        out.skip(_rel(path, root), "hidden-file", f"hidden file {name!r} left out")
        return False
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        out.skip(
            _rel(path, root),
            "not-an-image-extension",
            f"extension {path.suffix or '(none)'!r} is not one of {sorted(IMAGE_EXTENSIONS)}",
        )
        return False
    return True


def _require_root(root: Path, fmt: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{fmt}: dataset root {root} does not exist or is not a folder; "
            "set the ingest stage's `root` to the dataset folder"
        )
    return root


def _matching_images(folder: Path, root: Path, out: _Collector, name_re: re.Pattern[str],
                     pattern: str) -> Iterator[tuple[str, re.Match[str]]]:
    """``(path relative to root, name match)`` of each image under ``folder``, in walk order.

    Skipped files go to ``out.skipped`` (:func:`_triage`), names off ``pattern`` to the quarantine.
    """
    for path in _walk(folder):
        if not _triage(path, root, out):
            continue
        m = name_re.match(path.stem)
        if m is None:
            out.quarantine(_rel(path, root), "unparseable-name", f"name {path.name!r} does not match {pattern}")
            continue
        yield _rel(path, root), m


def _enter(root: Path, marker: str, nested: Iterable[str]) -> Path:
    """Descend into a known release folder (``Market-1501-v15.09.15``) when ``marker`` is there."""
    if (root / marker).exists():
        return root
    for name in nested:
        if (root / name / marker).exists():
            return root / name
    return root


def _check_splits(fmt: str, splits: Iterable[str]) -> tuple[str, ...]:
    splits = tuple(splits)
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(
                f"{fmt}: option splits has {split!r}; expected a subset of {list(SPLITS)}."
                f"{did_you_mean(split, SPLITS)}"
            )
    return splits


# ----------------------------------------------------------------------------- Market-style


# Each name regex has groups pid, cam and frame; any other group goes to Record.extra, in order.
_MARKET_RE = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)s(?P<sequence>\d+)_(?P<frame>\d+)_(?P<box>\d+)$")
_DUKE_RE = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)_f(?P<frame>\d+)$")
_CUHK03_RE = re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d+)_(?P<frame>\d+)$")

_MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def _parse_split_folders(root: Path, fmt: str, splits: Iterable[str], name_re: re.Pattern[str], pattern: str,
                         num_cameras: int, count_distractors: bool = False) -> ParseResult:
    """The Market-1501 layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` in ``root``."""
    splits = _check_splits(fmt, splits)
    out = _Collector(fmt)
    for split in splits:
        folder = root / _MARKET_FOLDERS[split]
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"{fmt}: folder {folder} for the {split} subset is missing; found folders "
                f"{present}. Point root at the folder that holds "
                f"{', '.join(_MARKET_FOLDERS[s] for s in splits)}, or set option splits"
            )
        for rel, m in _matching_images(folder, root, out, name_re, pattern):
            pid, cam, frame = int(m["pid"]), int(m["cam"]), int(m["frame"])
            extra = tuple((k, v) for k, v in m.groupdict().items() if k not in ("pid", "cam", "frame"))
            if pid == -1:
                out.quarantine(rel, "junk-id", "identity -1 is a junk box; dropped")
                continue
            if not 1 <= cam <= num_cameras:
                out.quarantine(
                    rel, "unknown-camera", f"camera c{cam}; expected c1..c{num_cameras}"
                )
                continue
            if pid == 0 and count_distractors:
                out.counts["distractors_kept"] += 1
            out.records.append(Record(rel, pid, cam - 1, split, cam, frame, extra))
    return out.result()


def parse_market1501(root: Path, options: MarketOptions | None = None) -> ParseResult:
    """Market-1501 (Zheng et al., ICCV 2015): ``PPPP_cCsS_FFFFFF_BB.jpg``, 6 cameras."""
    root = _enter(_require_root(root, "market1501"), "bounding_box_train", ["Market-1501-v15.09.15"])
    return _parse_split_folders(
        root, "market1501", (options or MarketOptions()).splits, _MARKET_RE,
        "PPPP_cCsS_FFFFFF_BB (e.g. 0002_c1s1_000451_03.jpg)", num_cameras=6, count_distractors=True,
    )


def parse_dukemtmc_reid(root: Path, options: DukeOptions | None = None) -> ParseResult:
    """DukeMTMC-reID (Zheng et al., ICCV 2017): ``PPPP_cC_fFFFFFFF.jpg``, 8 cameras."""
    root = _enter(_require_root(root, "dukemtmc-reid"), "bounding_box_train", ["DukeMTMC-reID"])
    return _parse_split_folders(
        root, "dukemtmc-reid", (options or DukeOptions()).splits, _DUKE_RE,
        "PPPP_cC_fFFFFFFF (e.g. 0005_c2_f0046985.jpg)", num_cameras=8,
    )


def parse_cuhk03_np(root: Path, options: CUHK03NPOptions | None = None) -> ParseResult:
    """CUHK03-NP (Zhong et al., CVPR 2017 split of Li et al., CVPR 2014): ``PPPP_cC_N.png``."""
    options = options or CUHK03NPOptions()
    if options.variant not in ("detected", "labeled"):
        raise ConfigError(
            f"cuhk03-np: option variant is {options.variant!r}; expected 'detected' or 'labeled'"
        )
    root = _require_root(root, "cuhk03-np")
    variant_root = root / options.variant
    if not variant_root.is_dir():
        raise DataError(
            f"cuhk03-np: folder {variant_root} is missing; expected {root} to hold labeled/ and "
            "detected/ (the CUHK03-NP release). Point root at that folder"
        )
    result = _parse_split_folders(
        variant_root, "cuhk03-np", options.splits, _CUHK03_RE, "PPPP_cC_N (e.g. 0001_c1_1.png)", num_cameras=2
    )

    def reroot(items: list[Any]) -> list[Any]:  # paths relative to the dataset root, not the variant
        return [replace(item, path=f"{options.variant}/{item.path}") for item in items]

    return ParseResult(reroot(result.records), reroot(result.quarantined), result.counts, reroot(result.skipped))


# ----------------------------------------------------------------------------- MSMT17


_MSMT_RE = re.compile(r"^(?P<pid>\d+)_(?P<index>\d+)_(?P<cam>\d+)_(?P<rest>.+)$")
_MSMT_REST_RE = re.compile(r"^(?P<daytime>\d{4}[a-z]+)_(?P<frame>\d+)(?:_|$)")
_MSMT_DIRS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}


def parse_msmt17(root: Path, options: MSMT17Options | None = None) -> ParseResult:
    """MSMT17 (Wei et al., CVPR 2018): list files ``<relpath> <pid>``, 15 cameras."""
    options = options or MSMT17Options()
    root = _enter(_require_root(root, "msmt17"), "list_train.txt", ["MSMT17_V1", "MSMT17_V2"])
    version = options.version
    if version == "auto":
        version = "v1" if (root / "train").is_dir() else "v2"
    if version not in _MSMT_DIRS:
        raise ConfigError(f"msmt17: option version is {version!r}; expected auto, v1 or v2")
    train_dir, test_dir = _MSMT_DIRS[version]
    lists = {
        "list_train.txt": (train_dir, "train"),
        "list_val.txt": (train_dir, "train"),
        "list_query.txt": (test_dir, "query"),
        "list_gallery.txt": (test_dir, "gallery"),
    }
    missing = [name for name in lists if not (root / name).is_file()]
    missing += [d + "/" for d in (train_dir, test_dir) if not (root / d).is_dir()]
    if missing:
        raise DataError(
            f"msmt17: {root} lacks {', '.join(missing)} (MSMT17 {version.upper()} layout: "
            f"list_{{train,val,query,gallery}}.txt beside {train_dir}/ and {test_dir}/). "
            "Point root at the MSMT17_V1 or MSMT17_V2 folder, or set option version"
        )
    out = _Collector("msmt17")
    for list_name, (image_dir, split) in lists.items():
        if list_name == "list_val.txt" and not options.merge_val:
            for rel, _pid, _line in _read_list(root / list_name, out):
                if f"{image_dir}/{rel}" not in out.listed:
                    out.listed.add(f"{image_dir}/{rel}")
                    out.skip(f"{image_dir}/{rel}", "val-not-merged", "merge_val is off")
            continue
        for rel, pid, line in _read_list(root / list_name, out):
            path = f"{image_dir}/{rel}"
            where = f"{list_name}:{line}"
            if not out.first_listing(root, path, where, f"{where} lists it; no such file"):
                continue
            if pid == -1:
                out.quarantine(path, "junk-id", f"{where}: identity -1 is junk; dropped")
                continue
            m = _MSMT_RE.match(Path(rel).stem)
            if m is None:
                out.quarantine(
                    path,
                    "unparseable-name",
                    f"{where}: name does not match PPPP_III_CC_<date><time>_FFFF_N "
                    "(e.g. 0000_000_01_0303morning_0015_0.jpg)",
                )
                continue
            cam = int(m["cam"])
            if not 1 <= cam <= 15:
                out.quarantine(path, "unknown-camera", f"{where}: camera {cam}; expected 01..15")
                continue
            rest = _MSMT_REST_RE.match(m["rest"])
            frame = int(rest["frame"]) if rest else None
            extra = (("daytime", rest["daytime"]),) if rest else ()
            out.records.append(Record(path, pid, cam - 1, split, cam, frame, extra))
    for folder in (train_dir, test_dir):
        for path in _walk(root / folder):
            rel = _rel(path, root)
            if rel not in out.listed and _triage(path, root, out):
                out.skip(rel, "not-in-list", "no list_*.txt file names this image")
    return out.result()


def _read_list(path: Path, out: _Collector) -> Iterator[tuple[str, int, int]]:
    """``(relpath, pid, line_number)`` for each well-formed ``<relpath> <pid>`` line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
                out.quarantine(
                    f"{path.name}:{number}",
                    "bad-manifest-row",
                    f"{path.name}:{number}: {line.strip()!r}; expected '<relpath> <pid>'",
                )
                continue
            yield parts[0], int(parts[1]), number


# ----------------------------------------------------------------------------- split checks


def check_splits(result: ParseResult, fmt: str, options: Any) -> str | None:
    """Raise :class:`DataError` for a parse whose test side cannot be evaluated: query without
    gallery (or the reverse), no test images where the format has them, identities in both train
    and test (folder format, unless ``shared_ids``). Returns a warning for a train-only folder dataset.
    A quiet "Completed" with an empty gallery hid a wrong ``camera_base``."""
    by_split = Counter(r.split for r in result.records)
    n = {s: by_split.get(s, 0) for s in SPLITS}
    requested = set(getattr(options, "splits", SPLITS)) if fmt != "folder" else None
    reasons = Counter(q.reason for q in result.quarantined).most_common(3)
    why = (f" Quarantined: {', '.join(f'{r} {c}' for r, c in reasons)} (quarantine.json)." if reasons else "")
    counts = f"train {n['train']}, query {n['query']}, gallery {n['gallery']} images"
    if (n["query"] == 0) != (n["gallery"] == 0) or (
            requested is not None and {"query", "gallery"} <= requested and not n["query"]):
        raise DataError(f"{fmt}: the test side cannot be evaluated: {counts}; both query and gallery need "
                        f"images.{why} Fix: check the dataset's test folders or split column and the camera "
                        "options (e.g. camera_base: 0 for 0-based camera ids)")
    if fmt == "folder":
        test_ids = {r.pid for r in result.records if r.split != "train"}
        shared = sorted(test_ids & {r.pid for r in result.records if r.split == "train"})
        if shared and not getattr(options, "shared_ids", False):
            raise DataError(f"folder: {len(shared)} identities are in train and in query/gallery (e.g. "
                            f"{shared[:5]}); a re-ID test set has unseen identities. Fix: split by identity, or "
                            "set option shared_ids: true if the protocol really shares them")
        if not test_ids:
            return (f"folder: no query or gallery images ({counts}): a train-only dataset, nothing to evaluate "
                    "on (a manifest's split column assigns them)")
    return None


# ----------------------------------------------------------------------------- CUHK01


_CUHK01_RE = re.compile(r"^(?P<pid>\d{4})(?P<index>\d{3})$")


def parse_cuhk01(root: Path, options: CUHK01Options | None = None) -> ParseResult:
    """CUHK01 (Li, Zhao & Wang, ACCV 2012): ``PPPPIII.png``, 2 cameras, seeded id split."""
    options = options or CUHK01Options()
    root = _require_root(root, "cuhk01")
    folder = next((root / n for n in ("images", "campus") if (root / n).is_dir()), None)
    if folder is None:
        raise DataError(
            f"cuhk01: {root} has neither images/ nor campus/; expected the CUHK01 crops "
            "named PPPPIII.png in one of them"
        )
    if options.query_camera not in (0, 1):
        raise ConfigError(
            f"cuhk01: option query_camera is {options.query_camera}; expected 0 or 1"
        )
    if options.split_method not in CUHK01_SPLIT_METHODS:
        raise ConfigError(
            f"cuhk01: option split_method is {options.split_method!r}; expected one of "
            f"{', '.join(CUHK01_SPLIT_METHODS)} (numpy reproduces splits/rng0.csv at split_seed 0)"
        )
    out = _Collector("cuhk01")
    parsed: list[tuple[str, int, int, int]] = []  # (rel, pid, orig cam 1|2, image index)
    for rel, m in _matching_images(folder, root, out, _CUHK01_RE, "PPPPIII.png"):
        index = int(m["index"])
        if index not in (1, 2, 3, 4):
            out.quarantine(
                rel, "unknown-camera", f"image index {index:03d}; expected 001..004 (2 per camera)"
            )
            continue
        parsed.append((rel, int(m["pid"]), 1 if index <= 2 else 2, index))
    pids = sorted({pid for _, pid, _, _ in parsed})
    if not 0 < options.num_train_ids < len(pids):
        raise ConfigError(
            f"cuhk01: option num_train_ids is {options.num_train_ids}; "
            f"expected 1..{len(pids) - 1} "
            f"({len(pids)} identities found, at least one must be left for testing)"
        )
    choose = seeded_identity_split if options.split_method == "sha256" else numpy_identity_split
    train_ids = set(choose(pids, options.num_train_ids, options.split_seed))
    for rel, pid, cam, index in parsed:
        camid = cam - 1
        if pid in train_ids:
            split = "train"
        else:
            split = "query" if camid == options.query_camera else "gallery"
        extra = (("split_seed", str(options.split_seed)),)
        if options.split_method != "sha256":  # the default's records stay as they were
            extra += (("split_method", options.split_method),)
        out.records.append(Record(rel, pid, camid, split, cam, index, extra))
    out.counts.update(
        split_seed=options.split_seed,
        train_ids=len(train_ids),
        test_ids=len(pids) - len(train_ids),
    )
    return out.result()


CUHK01_SPLIT_METHODS = ("sha256", "numpy")


def numpy_identity_split(pids: Iterable[int], num_train: int, seed: int) -> list[int]:
    """The ``num_train`` train ids: the sorted ids permuted by
    ``numpy.random.default_rng(seed).permutation``, first ``num_train``, sorted result. The
    rule of ``shared/data/cuhk01/splits/rng0.csv`` (a test checks it against the file); it
    relies on NumPy keeping ``Generator.permutation``'s stream, which it has since 1.17."""
    import numpy as np

    ids = np.array(sorted(set(pids)))
    return sorted(np.random.default_rng(seed).permutation(ids)[:num_train].tolist())


def seeded_identity_split(pids: Iterable[int], num_train: int, seed: int) -> list[int]:
    """The ``num_train`` train ids: ids ranked by sha256("<seed>:<pid>"), sorted result.

    A hash ranking instead of a shuffled RNG stream, so the split is the same on every
    Python and NumPy version and does not depend on the order the ids were found in.
    """
    def rank(pid: int) -> str:
        return hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()

    return sorted(sorted(set(pids), key=rank)[:num_train])


# ----------------------------------------------------------------------------- folder


def parse_folder(root: Path, options: FolderOptions | None = None) -> ParseResult:
    """A generic dataset: one folder per identity, or a CSV manifest."""
    options = options or FolderOptions()
    root = _require_root(root, "folder")
    if options.folder_ids not in ("int", "sorted"):
        raise ConfigError(
            f"folder: option folder_ids is {options.folder_ids!r}; expected int or sorted"
        )
    if options.manifest is not None:
        return _parse_manifest(root, options)
    camera_re = _compile_camera_regex(options.camera_regex)
    out = _Collector("folder")
    id_dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for path in sorted((p for p in root.iterdir() if not p.is_dir()), key=lambda p: p.name):
        if _triage(path, root, out):
            out.quarantine(
                path.name, "unparseable-name", "image not inside an identity folder <root>/<pid>/"
            )
    for index, id_dir in enumerate(id_dirs):
        pid: int | None = index
        extra: tuple[tuple[str, str], ...] = (("folder", id_dir.name),)
        if options.folder_ids == "int":
            pid = int(id_dir.name) if re.fullmatch(r"-?\d+", id_dir.name) else None
            extra = ()
        for path in _walk(id_dir):
            if not _triage(path, root, out):
                continue
            rel = _rel(path, root)
            if pid is None:
                out.quarantine(
                    rel,
                    "unparseable-name",
                    f"identity folder {id_dir.name!r} is not an integer; rename it, or set "
                    "folder_ids: sorted to number folders 0..N-1",
                )
                continue
            if pid == -1:
                out.quarantine(rel, "junk-id", "identity folder -1 holds junk boxes; dropped")
                continue
            if camera_re is None:
                cam = options.camera_base
                out.counts["camera_defaulted"] += 1
            else:
                m = camera_re.search(path.name)
                if m is None or not re.fullmatch(r"\d+", m["cam"] or ""):
                    out.quarantine(
                        rel,
                        "unparseable-name",
                        f"name {path.name!r} has no camera number for camera_regex "
                        f"{options.camera_regex!r}",
                    )
                    continue
                cam = int(m["cam"])
            if cam - options.camera_base < 0:
                out.quarantine(
                    rel,
                    "unknown-camera",
                    f"camera {cam} is below camera_base={options.camera_base}",
                )
                continue
            out.records.append(Record(rel, pid, cam - options.camera_base, "train", cam, None, extra))
    if camera_re is None and out.records:
        logger.warning(
            "folder: no camera_regex or manifest given, so all %d images are camera 0; "
            "cross-camera evaluation needs real cameras",
            len(out.records),
        )
    return out.result()


def _compile_camera_regex(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"folder: option camera_regex {pattern!r} is not a regex: {exc}"
        ) from None
    if "cam" not in compiled.groupindex:
        raise ConfigError(
            f"folder: option camera_regex {pattern!r} has no named group 'cam'; "
            r"write it like '_c(?P<cam>\d+)'"
        )
    return compiled


def _parse_manifest(root: Path, options: FolderOptions) -> ParseResult:
    manifest = Path(options.manifest or "")
    if not manifest.is_absolute():
        manifest = root / manifest
    if not manifest.is_file():
        raise DataError(
            f"folder: manifest {manifest} does not exist; set option manifest to the CSV"
        )
    out = _Collector("folder")
    with open(manifest, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        lacking = [c for c in ("path", "pid", "camid") if c not in columns]
        if lacking:
            raise DataError(
                f"folder: manifest {manifest} lacks column(s) {', '.join(lacking)}; found header "
                f"{columns}, expected path,pid,camid[,split]"
            )
        for row in reader:
            where = f"{manifest.name}:{reader.line_num}"
            rel = (row.get("path") or "").strip().replace("\\", "/")
            pid_text, cam_text = (row.get("pid") or "").strip(), (row.get("camid") or "").strip()
            split = (row.get("split") or "train").strip() or "train"
            ok = rel and re.fullmatch(r"-?\d+", pid_text) and re.fullmatch(r"-?\d+", cam_text)
            if not ok or split not in SPLITS:
                out.quarantine(
                    where,
                    "bad-manifest-row",
                    f"{where}: path={rel!r} pid={pid_text!r} camid={cam_text!r} "
                    f"split={split!r}; expected a path, integer pid and camid, split in {SPLITS}",
                )
                continue
            if not out.first_listing(root, rel, where, f"{where}: no such file"):
                continue
            pid, cam = int(pid_text), int(cam_text)
            if pid == -1:
                out.quarantine(rel, "junk-id", f"{where}: identity -1; dropped")
                continue
            if cam - options.camera_base < 0:
                out.quarantine(
                    rel, "unknown-camera", f"{where}: camid {cam} is below camera_base={options.camera_base}"
                )
                continue
            out.records.append(Record(rel, pid, cam - options.camera_base, split, cam))
    for path in _walk(root):
        rel = _rel(path, root)
        if path == manifest or rel in out.listed:
            continue
        if _triage(path, root, out):
            out.skip(rel, "not-in-manifest", f"{manifest.name} does not name this image")
    return out.result()


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetFormat:
    """A registered dataset format: its parser and its typed options."""

    name: str
    parse: Callable[..., ParseResult]
    options: type
    description: str

    def make_options(self, values: Mapping[str, Any] | None = None) -> Any:
        """Build the options dataclass from a mapping; unknown keys are a ConfigError."""
        values = dict(values or {})
        known = [f.name for f in fields(self.options)]
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"dataset format {self.name}: unknown option {key!r}."
                    f"{did_you_mean(key, known)}"
                    f" Known options: {', '.join(known)}."
                )
        hints = get_type_hints(self.options)
        for key, value in values.items():  # choices are checked when the YAML loads, not at parse time
            choices = get_args(hints[key]) if get_origin(hints[key]) is Literal else ()
            if choices and value not in choices:
                raise ConfigError(
                    f"dataset format {self.name}: option {key} is {value!r}; expected one of "
                    f"{', '.join(map(str, choices))}."
                )
        if "splits" in values:
            values["splits"] = tuple(values["splits"])
        return self.options(**values)

    def __call__(self, root: Path, options: Any = None) -> ParseResult:
        if options is None or isinstance(options, Mapping):
            options = self.make_options(options)
        return self.parse(Path(root), options)


PARSERS: dict[str, DatasetFormat] = {
    spec.name: spec
    for spec in (
        DatasetFormat("market1501", parse_market1501, MarketOptions, "Market-1501, 6 cameras"),
        DatasetFormat(
            "dukemtmc-reid", parse_dukemtmc_reid, DukeOptions, "DukeMTMC-reID, 8 cameras"
        ),
        DatasetFormat(
            "msmt17", parse_msmt17, MSMT17Options, "MSMT17 V1/V2 list files, 15 cameras"
        ),
        DatasetFormat("cuhk03-np", parse_cuhk03_np, CUHK03NPOptions, "CUHK03-NP labeled/detected"),
        DatasetFormat("cuhk01", parse_cuhk01, CUHK01Options, "CUHK01, seeded id split, 2 cameras"),
        DatasetFormat(
            "folder", parse_folder, FolderOptions, "one folder per id, or a CSV manifest"
        ),
    )
}


def get_parser(name: str) -> DatasetFormat:
    """The registered format ``name``; an unknown name lists the known ones."""
    try:
        return PARSERS[name]
    except KeyError:
        raise unknown_name("dataset format", name, PARSERS) from None


def parse_dataset(name: str, root: Path, options: Any = None) -> ParseResult:
    """Parse ``root`` as dataset format ``name`` (options: the dataclass or a mapping)."""
    return get_parser(name)(Path(root), options)


# ----------------------------------------------------------------------------- images, report


def decode_records(
    root: Path, records: Iterable[Record], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[Record, DecodedImage | Quarantined]]:
    """Decode each record's image once: ``(record, DecodedImage)`` or ``(record, Quarantined)``."""
    root = Path(root)
    for record in records:
        try:
            yield record, decode_image(root / record.path, max_pixels=max_pixels)
        except ImageCheckError as exc:
            yield record, Quarantined(record.path, exc.reason, exc.detail)


def check_images(
    root: Path, result: ParseResult, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ParseResult:
    """A copy of ``result`` with unreadable images moved to the quarantine.

    For validation and reports only: it decodes every image and keeps no pixels. The ingest
    stage uses :func:`decode_records` per chunk instead, so each image is decoded once.
    """
    records: list[Record] = []
    quarantined = list(result.quarantined)
    conversions: Counter[str] = Counter()
    for record, outcome in decode_records(root, result.records, max_pixels=max_pixels):
        if isinstance(outcome, Quarantined):
            quarantined.append(outcome)
        else:
            records.append(record)
            conversions.update(outcome.conversions)
    quarantined.sort(key=lambda q: (q.path, q.reason))
    counts = {k: v for k, v in result.counts.items() if not k.startswith("quarantined.")}
    counts.update(_base_counts(records, quarantined, result.skipped))
    counts.update({f"conversion.{name}": n for name, n in conversions.items()})
    return ParseResult(records, quarantined, dict(sorted(counts.items())), list(result.skipped))


def summary_table(records: Iterable[Record]) -> str:
    """torchreid's dataset table: ids, images and cameras per subset (train, query, gallery)."""
    records = list(records)
    lines = [
        "  subset  | # ids | # images | # cameras",
        "  --------+-------+----------+----------",
    ]
    for split in SPLITS:
        subset = [r for r in records if r.split == split]
        ids, cams = len({r.pid for r in subset}), len({r.camid for r in subset})
        lines.append(f"  {split:<7} | {ids:>5} | {len(subset):>8} | {cams:>9}")
    return "\n".join(lines)


def train_label_map(chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> dict[int, int]:
    """Original train pid -> contiguous label 0..C-1 in sorted pid order, as re-ID toolkits
    relabel (torchreid's ``relabel=True``). ``export-hdf5`` and ``assign-labels`` both use this,
    so a label assigned upstream is the label the file stores."""
    pids: set[int] = set()
    for arrays, _ in chunks:
        for split, pid in zip(arrays.get("split", []), arrays.get("pid", [])):
            if split == "train":
                pids.add(int(pid))
    return {pid: i for i, pid in enumerate(sorted(pids))}
