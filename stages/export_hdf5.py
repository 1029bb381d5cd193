"""Stage ``export-hdf5``: collect real images (and, as they land, generated sets, keypoints and
label assignments) into one reidaug HDF5 file, format v1 (see docs/hdf5-format.md). Generated
sets: ``camstyle`` (``generate-camstyle``), ``poseguided`` (``generate-poseguided``, stored with
``source = pose``, its canonical pose id in ``gen_pose_id`` and, when keypoints go in, the
target pose as the fake's keypoints) and ``unconditional`` (``generate-unconditional``: LSRO's DCGAN
samples, ``source = dcgan``, no identity, origin or camera) and ``dgnet`` (``generate-dgnet``: DG-Net's swaps,
``source = dgnet``, origin = the appearance source, whose identity they show; the structure source is in the
fake's path and the stage's chunks). The later enum members (source ``dgnet``, label scheme ``structure``) go
into a file only when it holds them, so other files keep their bytes.

Train identities are relabelled to contiguous 0..C-1 (sorted original pid), as re-ID toolkits
do; query and gallery keep label -1. Real images get one-hot targets and the file records
``label_smoothing="precomputed"``, so a trainer never smooths again. The file carries the key
of every stage upstream (``stage_keys``) and a ``pipeline_key`` over them. One writer builds it
under a temp name and moves it into place; ``output:`` also publishes a copy at a path of the
user's choosing (atomic too, and checked so that no two stages claim the same path).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from reidaug.errors import ConfigError
from reidaug.io.atomic import atomic_path
from reidaug.pipeline.context import StageContext
from reidaug.pipeline.hashing import stable_hash
from reidaug.pipeline.stage import Params, StageSpec

OUTPUT = "dataset.h5"
SPLITS = ("train", "query", "gallery")
# sets that can go into the file, and the upstream slot that provides each
SET_SOURCES = {"real": "dataset", "camstyle": "camstyle", "poseguided": "poseguided", "unconditional": "unconditional",
               "dgnet": "dgnet"}
# the HDF5 `source` enum value of each set (h5format.SOURCES, LATER_SOURCES)
SET_ENUM = {"real": "real", "camstyle": "camstyle", "poseguided": "pose", "unconditional": "dcgan", "dgnet": "dgnet"}


class ExportParams(Params):
    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"resize"})  # added after v2 shipped

    sets: list[str] | None = Field(
        None, description=("image sets that go in: real, camstyle, poseguided, unconditional, dgnet (default: real + "
                            "every bound set)"))
    splits: list[Literal["train", "query", "gallery"]] = Field(default_factory=lambda: list(SPLITS))
    encoding: Literal["raw", "jpeg", "png"] = Field("raw", description="raw = fixed HxWx3 uint8 (fastest to read)")
    image_height: int = Field(256, ge=8, le=2048)
    image_width: int = Field(128, ge=8, le=2048)
    keep_native_size: bool = Field(False, description="jpeg/png only: store each image at its own size")
    resize: Literal["stretch", "pad"] = Field("stretch", description=(
        "how an image reaches image_height x image_width: stretch (each axis on its own) or pad (aspect ratio "
        "kept, margins in the ImageNet mean colour; Almazan et al. 2018). pad: real images only"))
    compression: str = Field("none", description="raw only: none | lzf | gzip-0..9")
    jpeg_quality: int = Field(95, ge=1, le=100)
    output: str | None = Field(None, description="also copy the file here (relative to the YAML)")
    batch_size: int = Field(256, ge=1, description="images per writer call (does not change the file)")

    @field_validator("sets")
    @classmethod
    def _known_sets(cls, value: list[str] | None) -> list[str] | None:
        from reidaug.errors import did_you_mean

        if value is None:
            return None
        for s in value:
            if s not in SET_SOURCES:
                raise ValueError(
                    f"a set this pipeline can export: {', '.join(SET_SOURCES)}.{did_you_mean(s, SET_SOURCES)}"
                )
        if "real" not in value:
            raise ValueError("a list that includes 'real' (fakes refer to the real images they came from)")
        return value

    @field_validator("compression")
    @classmethod
    def _known_compression(cls, value: str) -> str:
        gzip_level_ok = value.startswith("gzip-") and value[5:].isdigit() and 0 <= int(value[5:]) <= 9
        if value not in ("none", "lzf") and not gzip_level_ok:
            raise ValueError("none, lzf or gzip-0 .. gzip-9")
        return value

    def claimed_paths(self, base_dir: Path) -> list[Path]:
        if self.output is None:
            return []
        p = Path(self.output).expanduser()
        return [p if p.is_absolute() else base_dir / p]


def _sets(ctx: StageContext) -> list[str]:
    """The sets that go in: ``params.sets``, or real + every bound generated set."""
    p: ExportParams = ctx.params
    bound = [name for name, slot in SET_SOURCES.items() if ctx.inputs.get(slot) is not None]
    if p.sets is None:
        return bound
    missing = [s for s in p.sets if ctx.inputs.get(SET_SOURCES[s]) is None]
    if missing:
        raise ConfigError(f"sets lists {missing}, but no stage provides them. Fix: bind "
                          + ", ".join(f"inputs.{SET_SOURCES[s]} (e.g. generate-{s}.fakes)" for s in missing)
                          + " or leave them out of sets.")
    return list(p.sets)


def plan(ctx: StageContext) -> int:
    p: ExportParams = ctx.params
    sets = _sets(ctx)
    generated = [s for s in sets if s != "real"]
    if "unconditional" in sets and ctx.inputs.get("labels") is None:
        raise ConfigError("the unconditional set (LSRO's DCGAN fakes) has no identity, so it needs a soft target: "
                          "bind inputs.labels to an assign-labels stage that reads it (its default scheme for the set "
                          "is lsro, the uniform label), or leave it out of sets.")
    if p.resize == "pad" and p.keep_native_size:
        raise ConfigError("params.resize: pad places each image in image_height x image_width, and keep_native_size "
                          "stores native sizes. Fix: leave one of them out.")
    if p.resize == "pad" and generated:
        raise ConfigError(
            f"params.resize: pad keeps the aspect ratio of the real images, but the generated sets {generated} "
            "were made from stretched inputs at the generator's size, so real and fake images would disagree in "
            "geometry. Fix: export sets: [real] with resize: pad, or keep resize: stretch for a file with fakes.")
    if generated and ctx.inputs.get("labels") is None:
        raise ConfigError(
            f"generated sets {generated} need training targets, and no assign-labels "
            f"output is bound. Fix: add an assign-labels stage (e.g. `assign-labels: {{params: {{schemes: "
            f"{{{generated[0]}: lsr}}}}, inputs: {{{generated[0]}: generate-{generated[0]}.fakes}}}}`) and bind "
            "`labels: assign-labels.labels` here."
        )
    return 1


def _load_labels(ctx: StageContext) -> tuple[dict[tuple[str, str], tuple[str, Any, Any]], int]:
    """(set, path) -> (scheme, target index row, target value row), and the widest row."""
    handle = ctx.inputs.get("labels")
    out: dict[tuple[str, str], tuple[str, Any, Any]] = {}
    width = 1
    if handle is None:
        return out, width
    for arrays, attrs in handle.iter_chunks():
        width = max(width, int(arrays["target_index"].shape[1]) if arrays["target_index"].ndim == 2 else 1)
        for path, idx, val in zip(arrays["path"], arrays["target_index"], arrays["target_value"]):
            out[(attrs["set"], str(path))] = (attrs["scheme"], idx, val)
    return out, width


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.data.datasets import train_label_map
    from reidaug.data.h5format import DEFAULT_TARGET_TOPK, H5Writer
    from reidaug.data.images import decode_stored
    from reidaug.errors import DataError
    from reidaug.pipeline.context import read_h5_chunk

    p: ExportParams = ctx.params
    if p.keep_native_size and p.encoding == "raw":
        raise ConfigError("keep_native_size needs encoding jpeg or png (raw stores one fixed size)")
    sets = _sets(ctx)
    dataset = ctx.input("dataset")
    poses = ctx.inputs.get("keypoints")  # optional: extract-pose output, one chunk per ingest chunk
    pose_chunks = poses.chunk_paths() if poses is not None else None
    label_of = train_label_map(dataset.iter_chunks())  # contiguous train labels (sorted pid)
    labels, width = _load_labels(ctx)
    later = (["dgnet"] if "dgnet" in sets else []) + (
        ["structure"] if any(v[0] == "structure" for v in labels.values()) else [])

    def targets(set_name: str, paths: list[str]) -> dict[str, Any]:
        """Scheme and sparse targets for train rows, from assign-labels (one-hot without it)."""
        if not labels:
            return {"label_scheme": "onehot"}
        missing = [q for q in paths if (set_name, q) not in labels]
        if missing:
            raise DataError(f"the bound assign-labels output has no target for {len(missing)} {set_name} "
                            f"samples (e.g. {missing[0]}); it was computed from other inputs. Fix: bind assign-labels "
                            f"to the same ingest / generator stages as this export.")
        rows = [labels[(set_name, q)] for q in paths]
        idx = np.full((len(rows), width), -1, np.int32)
        val = np.zeros((len(rows), width), np.float32)
        for r, (_, i, v) in enumerate(rows):
            idx[r, :len(i)], val[r, :len(v)] = i, v
        return {"label_scheme": [r[0] for r in rows], "target_index": idx, "target_value": val}

    stage_keys = dict(ctx.lineage)
    writer = H5Writer(
        ctx.work_dir / OUTPUT,
        image_size=None if p.keep_native_size else (p.image_height, p.image_width),
        encoding=p.encoding, compression=p.compression, jpeg_quality=p.jpeg_quality, resize=p.resize,
        num_classes=len(label_of) or None, target_topk=max(DEFAULT_TARGET_TOPK, width),
        attrs={"pipeline_key": stable_hash(stage_keys), "stage_keys": stage_keys}, later_members=later,
    )
    counts = {s: 0 for s in SPLITS} | {f"num_{s}": 0 for s in sets if s != "real"}
    train_row: dict[str, int] = {}  # path of a real train image -> its row (the origin of its fakes)
    with writer:
        for c, (arrays, _) in enumerate(dataset.iter_chunks()):
            n = len(arrays["path"])
            kp = None
            if pose_chunks is not None:
                pa, _ = read_h5_chunk(pose_chunks[c])
                if list(pa["path"]) != list(arrays["path"]):
                    raise DataError(f"keypoints chunk {c} does not list the images of dataset chunk {c}; "
                                    "extract-pose must read the same ingest output (check its inputs)")
                kp = pa["keypoints"]
            for split in p.splits:
                rows = [i for i in range(n) if arrays["split"][i] == split]
                for start in range(0, len(rows), p.batch_size):
                    batch = rows[start:start + p.batch_size]
                    pids = arrays["pid"][batch]
                    paths = [str(arrays["path"][i]) for i in batch]
                    if split == "train":
                        for offset, q in enumerate(paths):
                            train_row[q] = counts["train"] + offset
                    writer.append(
                        split,
                        images=[decode_stored(arrays["image"][i]) for i in batch],
                        pid=pids,
                        camid=arrays["camid"][batch],
                        label=np.array([label_of[int(x)] for x in pids]) if split == "train" else None,
                        source="real",
                        path=paths,
                        keypoints=kp[batch] if kp is not None else None,
                        **(targets("real", paths) if split == "train" else {}),
                    )
                    counts[split] += len(batch)
        # Generated sets go into train after every real image, so each origin is a real row.
        for set_name in (s for s in sets if s != "real"):
            if "train" not in p.splits:
                raise ConfigError(f"set {set_name!r} holds train samples, but splits leaves out train.")
            for arrays, _ in ctx.input(SET_SOURCES[set_name]).iter_chunks():
                n = len(arrays.get("path", []))
                for start in range(0, n, p.batch_size):
                    batch = list(range(start, min(n, start + p.batch_size)))
                    paths = [str(arrays["path"][i]) for i in batch]
                    origin_paths = [str(arrays["origin_path"][i]) for i in batch]  # "": no origin (LSRO)
                    lost = [q for q in origin_paths if q and q not in train_row]
                    if lost:
                        raise DataError(f"{set_name} fakes come from images that are not real train images "
                                        f"of this export (e.g. {lost[0]}); the generator read another ingest output. "
                                        "Fix: bind both to the same ingest stage.")
                    pids = arrays["pid"][batch]
                    writer.append(
                        "train",
                        images=[decode_stored(arrays["image"][i]) for i in batch],
                        pid=pids,
                        camid=arrays["camid"][batch],
                        label=np.array([label_of.get(int(x), -1) for x in pids]),
                        source=SET_ENUM[set_name],
                        origin=np.array([train_row[q] if q else -1 for q in origin_paths]),
                        path=paths,
                        gen_target_camid=arrays["target_camid"][batch] if "target_camid" in arrays else -1,
                        gen_pose_id=arrays["target_pose"][batch] if "target_pose" in arrays else -1,
                        keypoints=(arrays["target_keypoints"][batch]
                                   if pose_chunks is not None and "target_keypoints" in arrays else None),
                        gen_checksum=[str(arrays["gen_checksum"][i]) for i in batch],
                        **targets(set_name, paths),
                    )
                    counts[f"num_{set_name}"] += len(batch)
    ctx.write_chunk(index, {f"num_{s}": counts[s] for s in SPLITS}
                    | {k: v for k, v in counts.items() if k.startswith("num_")} | {"num_classes": len(label_of)})


def finalize(ctx: StageContext) -> dict[str, Any]:
    from reidaug.data.inspect import summary

    p: ExportParams = ctx.params
    arrays, _ = next(ctx.iter_own_chunks())
    path = ctx.work_dir / OUTPUT
    final_path = Path(str(ctx.work_dir).removesuffix(".partial")) / OUTPUT  # where it lives once committed
    report = [f"HDF5 dataset: {final_path}"]
    claimed = p.claimed_paths(ctx.base_dir)
    if claimed:
        with atomic_path(claimed[0]) as tmp:
            shutil.copyfile(path, tmp)
        report.append(f"published a copy at {claimed[0]}")
    lines = summary(path).splitlines()
    report.extend(lines[1:])  # its first line names the file under its temporary folder
    report.append(f"look at it: reidaug inspect {claimed[0] if claimed else final_path} --grid grid.png")
    return {k: int(v) for k, v in arrays.items()} | {"report": report, "file": OUTPUT}


SPEC = StageSpec(
    name="export-hdf5", version=2,  # 2: keypoints follow a resize by the pixel-centre rule (was x*s)
    description="collect the real images (and generated sets) into one HDF5 file (format v1)",
    params=ExportParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "keypoints": "", "camstyle": "", "poseguided": "", "unconditional": "",
            "dgnet": "", "labels": ""},
    optional_inputs=frozenset({"keypoints", "camstyle", "poseguided", "unconditional", "dgnet", "labels"}),
    unkeyed_if_unbound=frozenset({"poseguided", "unconditional", "dgnet"}),  # added later: keys without them stay
    outputs={"hdf5": OUTPUT, "chunks": "chunks"},
    nonsemantic=frozenset({"output"}),
)
