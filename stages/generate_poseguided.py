"""Stage ``generate-poseguided``: every train image rendered in new poses, keeping its identity.

The generator of ``train-posegan`` (PG2 or Deformable GAN) renders each train image of the
ingest output in target poses:

- ``targets: canonical`` — PN-GAN's canonical poses (Qian et al., "Pose-Normalized Image
  Generation for Person Re-identification", ECCV 2018): each image in each of the k poses of a
  ``cluster-poses`` stage (bound as ``canonical``), rendered into that stage's frame;
- ``targets: sampled`` — ``num_poses`` poses drawn (seeded, without replacement) per image from
  the keypoints of the *other* train images;
- ``targets: list`` — the poses of the train images listed in ``pose_list`` (ingest paths; an
  image is not rendered in its own pose).

A target pose with fewer than ``min_target_keypoints`` confident keypoints (above the
generator's training ``score_threshold``, unless set here) would give a broken person: such
fakes are dropped before generation and counted per target kind in the report, never silently.
That same threshold is what the generator draws both poses with and what the recorded target
keypoints keep, so a fake's keypoints are the pose it was rendered in.
Condition keypoints come from ``extract-pose``; every pose is rescaled to the generator's frame
as the images are. One chunk per ingest chunk, so it resumes like every stage; batches of
``batch_size`` with decoding, the model and PNG encoding overlapped
(:func:`reidaug.gen.common.overlapped`); bf16 autocast and channels_last on CUDA.

Each fake carries its provenance: origin image (path, ingest record), identity and camera it
keeps, target kind, canonical pose id or the source image (path, record) of the target pose,
the target keypoints in the fake's frame, and the generator checksum; its name is the origin's
whole path (``poseguided/<origin without extension>_canon<k>.png`` or ``_pose<record>.png``). ``assign-labels`` and
``export-hdf5`` take it as the ``poseguided`` set (HDF5 ``source = pose``, ``gen_pose_id`` =
the canonical pose id).
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import Field, model_validator

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import GenerateParams, StageSpec
from reidaug.validation import MAX_SEED

DEFAULT_NUM_POSES = 4


class GeneratePoseGuidedParams(GenerateParams):
    """Which fakes to make; device, amp, batch_size and the output size come
    from :class:`GenerateParams`."""

    targets: Literal["canonical", "sampled", "list"] = Field(
        "canonical", description="canonical (cluster-poses, PN-GAN) | sampled (other train images) | list")
    num_poses: int | None = Field(None, ge=1, le=1000,
        description=f"sampled: poses drawn per image (default {DEFAULT_NUM_POSES})")
    pose_list: list[str] | None = Field(None,
        description="list: train image paths (as ingest lists them) whose poses to use")
    min_target_keypoints: int = Field(8, ge=0, le=17,
        description="drop (and count) fakes whose target pose has fewer confident keypoints")
    score_threshold: float | None = Field(None, ge=0, le=1,
        description="a keypoint above it counts: for dropping, generating and the recorded target pose "
                    "(default: the generator's training value)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="for drawing sampled targets")

    @model_validator(mode="after")
    def _consistent(self) -> "GeneratePoseGuidedParams":
        if self.targets == "list":
            if not self.pose_list:
                raise ValueError("targets: list needs pose_list, the train image paths (as ingest lists them, e.g. "
                                 "bounding_box_train/0002_c1s1_000451_03.jpg) whose poses to use")
            dup = sorted({x for x in self.pose_list if self.pose_list.count(x) > 1})
            if dup:
                raise ValueError(f"pose_list names {dup} more than once. Fix: list each image once")
        elif self.pose_list is not None:
            raise ValueError(f"pose_list is for targets: list, but targets is {self.targets}. Fix: remove pose_list, "
                             "or set targets: list")
        if self.num_poses is not None and self.targets != "sampled":
            raise ValueError(f"num_poses is for targets: sampled, but targets is {self.targets}. Fix: remove "
                             "num_poses, or set targets: sampled")
        return self


class PoseTable(NamedTuple):
    """The train poses of the keypoints input (no images), in its order."""

    paths: list[str]
    records: Any  # (N,) int64 ingest record index
    keypoints: Any  # (N, 17, 3) float32, each in its own image's pixels
    hw: Any  # (N, 2) int64 image (height, width)
    index: dict[str, int]  # path -> position


class Target(NamedTuple):
    """A target pose: its kind, canonical pose id (or -1), source image (path, record; or "", -1),
    keypoints ``(17, 3)`` and the frame ``(h, w)`` they are in."""

    kind: str
    pose_id: int
    path: str
    record: int
    keypoints: Any
    frame: tuple[int, int]


class Fake(NamedTuple):
    """One fake to make: ingest row ``row`` of the chunk rendered in ``target``."""

    row: int
    target: Target


def _generator(ctx: StageContext):
    """The generator of the models input on ``params.device``, loaded once per thread (ctx.memo): chunks reuse it."""
    from reidaug.gen.common import generator_once
    from reidaug.gen.poseguided import PoseGuidedGenerator

    return generator_once(ctx, "generator",
                          lambda device, **kw: PoseGuidedGenerator.from_folder(ctx.input("models").path, device, **kw))


def _pose_table(ctx: StageContext) -> PoseTable:
    """The train poses of the keypoints input, read once per thread (ctx.memo)."""
    import numpy as np

    def read() -> PoseTable:
        paths, recs, kps, hws = [], [], [], []
        for arrays, _ in ctx.input("keypoints").iter_chunks():
            for i, split in enumerate(arrays.get("split", [])):
                if split != "train":
                    continue
                paths.append(str(arrays["path"][i]))
                recs.append(int(arrays["record_index"][i]))
                kps.append(arrays["keypoints"][i])
                hws.append((int(arrays["height"][i]), int(arrays["width"][i])))
        return PoseTable(paths=paths, records=np.asarray(recs, np.int64),
                         keypoints=np.stack(kps).astype(np.float32) if kps else np.zeros((0, 17, 3), np.float32),
                         hw=np.asarray(hws, np.int64).reshape(-1, 2), index={q: j for j, q in enumerate(paths)})

    return ctx.memo("pose_table", read)


_NO_CANONICAL = ("params.targets is 'canonical', which needs the canonical poses of a cluster-poses stage, but "
                 "input `canonical` is not bound (found no cluster-poses stage). Fix: add `cluster-poses: {params: "
                 "{k: 8}}` to the pipeline (it binds itself) or bind `inputs: {canonical: <a cluster-poses "
                 "stage>.canonical}`; or set targets: sampled.")


def _check_bindings(params: GeneratePoseGuidedParams, bound: frozenset[str]) -> str | None:
    """Refused when the YAML loads, not when this stage plans after the training upstream has run."""
    return _NO_CANONICAL if params.targets == "canonical" and "canonical" not in bound else None


def _canonical(ctx: StageContext) -> tuple[Any, tuple[int, int]]:
    import json

    import numpy as np

    from reidaug.errors import ConfigError

    handle = ctx.inputs.get("canonical")
    if handle is None:  # _check_bindings refuses this when the YAML loads; kept for direct callers
        raise ConfigError(_NO_CANONICAL)
    doc = json.loads(handle.path.read_text())
    return np.asarray(doc["keypoints"], np.float32), (int(doc["frame_hw"][0]), int(doc["frame_hw"][1]))


def _check_list(ctx: StageContext) -> None:
    from reidaug.errors import ConfigError, did_you_mean

    p: GeneratePoseGuidedParams = ctx.params
    table = _pose_table(ctx)
    unknown = [q for q in p.pose_list or [] if q not in table.index]
    if unknown:
        raise ConfigError(f"params.pose_list names {len(unknown)} path(s) that are not train images of "
                          f"{ctx.input('keypoints').stage}: {unknown[:3]}.{did_you_mean(unknown[0], table.paths)} "
                          f"Fix: list train image paths as ingest records them (e.g. {table.paths[:1]}).")


def plan(ctx: StageContext) -> int:
    p: GeneratePoseGuidedParams = ctx.params
    if p.targets == "canonical":
        _canonical(ctx)  # not bound: say so before any work
    elif p.targets == "list":
        _check_list(ctx)
    _generator(ctx)  # no CUDA, or a missing or foreign generator file: say so before any work
    return len(ctx.input("dataset").chunk_paths())


def _jobs(ctx: StageContext, index: int, arrays: dict[str, Any], threshold: float) -> tuple[list[Fake], dict[str, int]]:
    """The fakes of one chunk in a fixed order, and how many were dropped, by target kind."""
    import numpy as np

    from reidaug.gen.poseguided import count_confident

    p: GeneratePoseGuidedParams = ctx.params
    n = len(arrays.get("path", []))
    rows = [r for r in range(n) if arrays["split"][r] == "train"]
    jobs: list[Fake] = []
    if p.targets == "canonical":
        canon, frame = _canonical(ctx)
        for r in rows:
            jobs.extend(Fake(r, Target("canonical", j, "", -1, canon[j], frame)) for j in range(len(canon)))
    else:
        table = _pose_table(ctx)

        def pose(kind: str, j: int) -> Target:
            return Target(kind, -1, table.paths[j], int(table.records[j]), table.keypoints[j], tuple(table.hw[j]))

        if p.targets == "sampled":
            rng = ctx.rng(index)
            want = p.num_poses or DEFAULT_NUM_POSES
            for r in rows:
                own = table.index.get(str(arrays["path"][r]))
                pool = len(table.paths) - (own is not None)
                picks = np.sort(rng.choice(pool, size=min(want, pool), replace=False)) if pool else []
                for j in picks:
                    j = int(j) + (own is not None and int(j) >= own)  # skip the image's own pose
                    jobs.append(Fake(r, pose("sampled", j)))
        else:
            for r in rows:
                jobs.extend(Fake(r, pose("list", table.index[q])) for q in p.pose_list or []
                            if q != str(arrays["path"][r]))
    dropped: dict[str, int] = {}
    if jobs and p.min_target_keypoints > 0:
        keep = count_confident(np.stack([job.target.keypoints for job in jobs]), threshold) >= p.min_target_keypoints
        for job, k in zip(jobs, keep):
            if not k:
                dropped[job.target.kind] = dropped.get(job.target.kind, 0) + 1
        jobs = [job for job, k in zip(jobs, keep) if k]
    return jobs, dropped


def fake_name(origin: str, kind: str, pose_id: int, record: int) -> str:
    """``poseguided/<origin path without extension>_<canonK | poseR>.png``: the whole relative
    path, not the file name alone, since folder datasets repeat file names across identity
    folders (``0001/0.jpg``, ``0002/0.jpg``) and assign-labels / export-hdf5 match fakes by name."""
    stem = origin.rsplit(".", 1)[0] if "." in origin.rsplit("/", 1)[-1] else origin  # drop the extension only
    suffix = f"canon{pose_id}" if kind == "canonical" else f"pose{record}"
    return f"poseguided/{stem}_{suffix}.png"


def run_chunk(ctx: StageContext, index: int) -> None:
    import cv2
    import numpy as np

    from reidaug.data.images import decode_stored
    from reidaug.errors import DataError
    from reidaug.gen.common import generate_pngs
    from reidaug.gen.poseguided import clean_keypoints
    from reidaug.pipeline.context import read_h5_chunk
    from reidaug.pose.keypoints import rescale_keypoints

    p: GeneratePoseGuidedParams = ctx.params
    gen = _generator(ctx)
    threshold = gen.score_threshold if p.score_threshold is None else p.score_threshold
    arrays, _ = read_h5_chunk(ctx.input("dataset").chunk_paths()[index])
    pose_arrays, _ = read_h5_chunk(ctx.input("keypoints").chunk_paths()[index])
    n = len(arrays.get("path", []))
    if list(pose_arrays.get("path", [])) != list(arrays.get("path", [])):
        raise DataError(f"keypoints chunk {index} does not list the images of dataset chunk {index}; "
                        "extract-pose must read the same ingest output. Fix: bind both to one ingest stage.")
    jobs, dropped = _jobs(ctx, index, arrays, threshold)
    h, w = gen.size
    out_hw = p.out_hw((h, w))
    batch_size = p.batch_size_on(gen.device, (h, w))
    batches = [jobs[s:s + batch_size] for s in range(0, len(jobs), batch_size)]
    decoded: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row -> (image at model size, keypoints there)

    def condition(row: int) -> tuple[np.ndarray, np.ndarray]:
        if row not in decoded:
            img = decode_stored(arrays["image"][row])
            kp = rescale_keypoints(pose_arrays["keypoints"][row], img.shape[:2], (h, w))  # (17, 3)
            decoded[row] = (cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR), kp)
        return decoded[row]

    def prepare(batch: list[Fake]):
        conds = [condition(job.row) for job in batch]
        tkp = np.stack([rescale_keypoints(job.target.keypoints, job.target.frame, (h, w)) for job in batch])
        return gen.to_tensor(np.stack([c[0] for c in conds])), np.stack([c[1] for c in conds]), tkp

    def compute(item):
        x, ckp, tkp = item
        return gen.generate_tensor(x, ckp, tkp, threshold=threshold)  # the poses counted and recorded

    results, seconds = generate_pngs(batches, prepare, compute, (h, w), out_hw)
    paths = [str(q) for q in arrays["path"]] if n else []
    targets = [job.target for job in jobs]
    target_kp = (clean_keypoints(np.stack([rescale_keypoints(t.keypoints, t.frame, out_hw) for t in targets]),
                                 threshold) if jobs else np.zeros((0, 17, 3), np.float32))
    ctx.record(index, {"seconds": seconds, "device": str(gen.device), "images": len(jobs)})
    ctx.write_chunk(index, {
        "image": results,
        "path": [fake_name(paths[job.row], job.target.kind, job.target.pose_id, job.target.record) for job in jobs],
        "origin_path": [paths[job.row] for job in jobs],
        "origin_record": np.asarray([int(arrays["record_index"][job.row]) for job in jobs], np.int64),
        "pid": np.asarray([int(arrays["pid"][job.row]) for job in jobs], np.int64),
        "camid": np.asarray([int(arrays["camid"][job.row]) for job in jobs], np.int16),
        "target_kind": [t.kind for t in targets],
        "target_pose": np.asarray([t.pose_id for t in targets], np.int32),
        "target_path": [t.path for t in targets],
        "target_record": np.asarray([t.record for t in targets], np.int64),
        "target_keypoints": target_kp.astype(np.float32),
        "gen_checksum": [gen.checksum] * len(jobs),
    }, attrs={"dropped": dropped, "model": gen.model_name, "score_threshold": threshold})


def finalize(ctx: StageContext) -> dict[str, Any]:
    from collections import Counter

    from reidaug.gen.common import generation_speed

    p: GeneratePoseGuidedParams = ctx.params
    total, kinds, dropped = 0, Counter(), Counter()
    model, threshold = None, None
    for arrays, attrs in ctx.iter_own_chunks():
        total += len(arrays.get("path", []))
        kinds.update(str(k) for k in arrays.get("target_kind", []))
        dropped.update(attrs["dropped"])
        model, threshold = attrs["model"], attrs["score_threshold"]
    speed, speed_text = generation_speed(ctx.own_stats(), total)
    n_dropped = sum(dropped.values())
    report = [f"{total} pose-guided fakes ({model}, targets {p.targets}); {speed_text}",
              f"dropped {n_dropped} whose target pose has < {p.min_target_keypoints} keypoints above {threshold}"
              + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(dropped.items()))})" if n_dropped else "")]
    return {"num_fakes": total, "per_target_kind": dict(sorted(kinds.items())), "dropped": n_dropped,
            "dropped_per_kind": dict(sorted(dropped.items())), "model": model, **speed, "report": report}


SPEC = StageSpec(
    # 2: fakes named by the origin's whole path; 3: torch threads pinned, timings out of the chunk
    name="generate-poseguided", version=3,
    description="pose-guided fakes: each train image in canonical, sampled or listed poses, batched, with provenance",
    params=GeneratePoseGuidedParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "keypoints": "extract-pose.keypoints", "models": "train-posegan.models",
            "canonical": "cluster-poses.canonical"},
    optional_inputs=frozenset({"canonical"}),
    outputs={"fakes": "chunks"},
    check_bindings=_check_bindings,
)
