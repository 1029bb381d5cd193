"""Stage ``export-hdf5``: collect real images (and, as they land, generated sets, keypoints and
label assignments) into one reidaug HDF5 file, format v1 (see docs/hdf5-format.md).

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
from typing import Any, Literal

from pydantic import Field, field_validator

from reidaug.errors import ConfigError
from reidaug.pipeline.atomic import atomic_path
from reidaug.pipeline.context import StageContext
from reidaug.pipeline.hashing import stable_hash
from reidaug.pipeline.stage import Params, StageSpec

OUTPUT = "dataset.h5"
SPLITS = ("train", "query", "gallery")
# sets that can go into the file, and the upstream slot that provides each (none yet but real)
SET_SOURCES = {"real": "dataset"}


class ExportParams(Params):
    sets: list[str] = Field(default_factory=lambda: ["real"], description="which image sets go in (real, ...)")
    splits: list[Literal["train", "query", "gallery"]] = Field(default_factory=lambda: list(SPLITS))
    encoding: Literal["raw", "jpeg", "png"] = Field("raw", description="raw = fixed HxWx3 uint8 (fastest to read)")
    image_height: int = Field(256, ge=8, le=2048)
    image_width: int = Field(128, ge=8, le=2048)
    keep_native_size: bool = Field(False, description="jpeg/png only: store each image at its own size")
    compression: str = Field("none", description="raw only: none | lzf | gzip-0..9")
    jpeg_quality: int = Field(95, ge=1, le=100)
    output: str | None = Field(None, description="also copy the file here (relative to the YAML)")
    batch_size: int = Field(256, ge=1, description="images per writer call (does not change the file)")

    @field_validator("sets")
    @classmethod
    def _known_sets(cls, value: list[str]) -> list[str]:
        from reidaug.errors import did_you_mean

        for s in value:
            if s not in SET_SOURCES:
                raise ValueError(
                    f"a set this pipeline can export: {', '.join(SET_SOURCES)} (generated sets arrive with "
                    f"their generator stages).{did_you_mean(s, SET_SOURCES)}"
                )
        if "real" not in value:
            raise ValueError("a list that includes 'real' (fakes refer to the real images they came from)")
        return value

    @field_validator("compression")
    @classmethod
    def _known_compression(cls, value: str) -> str:
        if value not in ("none", "lzf") and not (value.startswith("gzip-") and value[5:].isdigit() and 0 <= int(value[5:]) <= 9):
            raise ValueError("none, lzf or gzip-0 .. gzip-9")
        return value

    def claimed_paths(self, base_dir: Path) -> list[Path]:
        if self.output is None:
            return []
        p = Path(self.output).expanduser()
        return [p if p.is_absolute() else base_dir / p]


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.data.h5format import H5Writer
    from reidaug.data.images import decode_stored

    p: ExportParams = ctx.params
    if p.keep_native_size and p.encoding == "raw":
        raise ConfigError("export-hdf5: keep_native_size needs encoding jpeg or png (raw stores one fixed size)")
    dataset = ctx.input("dataset")
    poses = ctx.inputs.get("keypoints")  # optional: extract-pose output, one chunk per ingest chunk
    pose_chunks = poses.chunk_paths() if poses is not None else None
    # Pass 1: the train identities, for contiguous labels.
    train_pids: set[int] = set()
    for arrays, _ in dataset.iter_chunks():
        for split, pid in zip(arrays["split"], arrays["pid"]):
            if split == "train":
                train_pids.add(int(pid))
    label_of = {pid: i for i, pid in enumerate(sorted(train_pids))}
    stage_keys = dict(ctx.lineage)
    writer = H5Writer(
        ctx.work_dir / OUTPUT,
        image_size=None if p.keep_native_size else (p.image_height, p.image_width),
        encoding=p.encoding, compression=p.compression, jpeg_quality=p.jpeg_quality,
        num_classes=len(label_of) or None,
        attrs={"pipeline_key": stable_hash(stage_keys), "stage_keys": stage_keys},
    )
    counts = {s: 0 for s in SPLITS}
    with writer:
        for c, (arrays, _) in enumerate(dataset.iter_chunks()):
            n = len(arrays["path"])
            kp = None
            if pose_chunks is not None:
                from reidaug.errors import DataError
                from reidaug.pipeline.context import read_h5_chunk

                pa, _ = read_h5_chunk(pose_chunks[c])
                if list(pa["path"]) != list(arrays["path"]):
                    raise DataError(f"export-hdf5: keypoints chunk {c} does not list the images of dataset chunk {c}; "
                                    "extract-pose must read the same ingest output (check its inputs)")
                kp = pa["keypoints"]
            for split in p.splits:
                rows = [i for i in range(n) if arrays["split"][i] == split]
                for start in range(0, len(rows), p.batch_size):
                    batch = rows[start:start + p.batch_size]
                    pids = arrays["pid"][batch]
                    writer.append(
                        split,
                        images=[decode_stored(arrays["image"][i]) for i in batch],
                        pid=pids,
                        camid=arrays["camid"][batch],
                        label=np.array([label_of[int(x)] for x in pids]) if split == "train" else None,
                        source="real",
                        path=[arrays["path"][i] for i in batch],
                        label_scheme="onehot" if split == "train" else None,
                        keypoints=kp[batch] if kp is not None else None,
                    )
                    counts[split] += len(batch)
    ctx.write_chunk(index, {f"num_{s}": counts[s] for s in SPLITS} | {"num_classes": len(label_of)})


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
    name="export-hdf5", version=1,
    description="collect the real images (and generated sets) into one HDF5 file (format v1)",
    params=ExportParams, run_chunk=run_chunk, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "keypoints": ""},
    optional_inputs=frozenset({"keypoints"}),
    outputs={"hdf5": OUTPUT, "chunks": "chunks"},
    nonsemantic=frozenset({"output"}),
)
