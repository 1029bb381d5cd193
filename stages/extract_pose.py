"""Stage ``extract-pose``: COCO-17 keypoints for every ingested image.

For each image, 17 keypoints ``(x, y, score)`` in the image's own pixel frame, from one of
three backends (:mod:`reidaug.models.pose_estimators`): ``mmpose`` (top-down RTMPose / HRNet
from a config and a local checkpoint; Jiang et al. 2023, Sun et al. CVPR 2019), ``movenet``
(MoveNet SinglePose, TFLite) or ``mediapipe`` (BlazePose, bundled in the wheel: needs no file);
or read from an OpenPose-18 annotation CSV (``openpose-csv``: the ``name:keypoints_y:keypoints_x``
files of Deformable GAN, PATN, GFLA and DPTN, looked up by image file name).
One output chunk per ``ingest`` chunk, inferred in batches of ``batch_size``. An image where the
model finds no person gets all-zero keypoints and is counted, never dropped. These keypoints
feed pose-guided generation (PG2, Deformable GAN), PN-GAN's canonical poses (``cluster-poses``)
and the HDF5 ``keypoints`` dataset.

Model files are never downloaded: ``model_path`` / ``checkpoint`` are local paths, hashed by
content into the key. Real mmpose checkpoints come from the OpenMMLab model zoo
(https://mmpose.readthedocs.io/en/latest/model_zoo/body_2d_keypoint.html); ``random_init: true``
runs the real mmpose code path with random weights (plumbing checks only).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import DEFAULT_THREADS, FileParam, Params, StageSpec

CONFIDENT = 12  # "a usable pose": at least this many keypoints above score_threshold


class ExtractPoseParams(Params):
    backend: Literal["mediapipe", "movenet", "mmpose", "openpose-csv"] = "mediapipe"
    annotations: FileParam | None = Field(
        None, description="openpose-csv: a name:keypoints_y:keypoints_x file (Deformable GAN / PATN format)")
    model_path: FileParam | None = Field(None, description="movenet: the .tflite file")
    config: FileParam | str | None = Field(None, description="mmpose: config file, or rtmpose-t/-s/-m, hrnet-w32")
    checkpoint: FileParam | None = Field(None, description="mmpose: a local .pth checkpoint")
    random_init: bool = Field(False, description="mmpose without a checkpoint (plumbing tests only)")
    upscale_height: int | None = Field(None, ge=32, le=2048, description="mediapipe: upscale small crops first")
    score_threshold: float = Field(0.3, ge=0, le=1, description="a keypoint above it counts as confident (stats)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    threads: int = Field(DEFAULT_THREADS, ge=1, le=256, description=(
        "mmpose on the CPU: torch threads per chunk (in the key: results may differ by thread count); the "
        "runner runs at most cores // threads chunks at once. The other backends run one thread per chunk"))

    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"threads"})

    def torch_threads(self) -> int | None:
        """Only mmpose runs torch (on ``device: cuda`` its CPU threads do not matter)."""
        return self.threads if self.backend == "mmpose" and self.device != "cuda" else None

    @model_validator(mode="after")
    def _backend_options(self) -> "ExtractPoseParams":
        if self.backend == "movenet" and self.model_path is None:
            raise ValueError("backend movenet needs model_path: a MoveNet SinglePose .tflite file")
        if self.backend == "openpose-csv" and self.annotations is None:
            raise ValueError("backend openpose-csv needs annotations: "
                             "the annotation CSV (name:keypoints_y:keypoints_x)")
        if self.backend == "mmpose":
            if self.config is None:
                raise ValueError("backend mmpose needs config: "
                                 "a config file or rtmpose-t, rtmpose-s, rtmpose-m, hrnet-w32")
            if self.checkpoint is None and not self.random_init:
                raise ValueError("backend mmpose needs checkpoint (a local .pth from the OpenMMLab model zoo), "
                                 "or random_init: true for plumbing tests")
        return self


def _device(p: ExtractPoseParams) -> str:
    if p.device != "auto":
        return p.device
    if p.backend != "mmpose":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _estimator(ctx: StageContext):
    """The calling thread's estimator, built on first use (ctx.memo): loading it per chunk would
    dominate, and the TFLite interpreter and the MediaPipe graph must not be shared between threads."""
    from reidaug.models.pose_estimators import build_estimator

    p: ExtractPoseParams = ctx.params
    config = p.config if isinstance(p.config, str) or p.config is None else str(p.config.path)
    device = _device(p)
    return ctx.memo(f"estimator|{device}", lambda: build_estimator(
        p.backend,
        model_path=str(p.model_path.path) if p.model_path else None,
        config=config if p.backend == "mmpose" else None,
        checkpoint=str(p.checkpoint.path) if p.checkpoint else None,
        random_init=p.random_init if p.backend == "mmpose" else False,
        upscale_height=p.upscale_height if p.backend == "mediapipe" else None,
        device=device,
    ))


def _annotations(ctx: StageContext):
    from reidaug.pose.openpose import read_openpose_csv

    return ctx.memo("annotations", lambda: read_openpose_csv(str(ctx.params.annotations.path)))


def plan(ctx: StageContext) -> int:
    return int(ctx.input("dataset").meta["num_chunks"])


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.data.images import decode_stored
    from reidaug.pipeline.context import read_h5_chunk

    p: ExtractPoseParams = ctx.params
    arrays, _ = read_h5_chunk(ctx.input("dataset").chunk_paths()[index])
    n = len(arrays["path"])
    keypoints = np.zeros((n, 17, 3), np.float32)  # (N, 17, 3): x, y, score in each image's frame
    if n and p.backend == "openpose-csv":
        # annotations made on the original images, looked up by file name (as those repos do)
        table = _annotations(ctx)
        for i, path in enumerate(arrays["path"]):
            kp = table.get(path.rsplit("/", 1)[-1])
            if kp is not None:
                keypoints[i] = kp
    elif n:
        est = _estimator(ctx)
        for start in range(0, n, p.batch_size):
            images = [decode_stored(b) for b in arrays["image"][start:start + p.batch_size]]
            keypoints[start:start + len(images)] = est.predict(images)
    ctx.write_chunk(index, {
        "keypoints": keypoints, "record_index": arrays["record_index"], "path": list(arrays["path"]),
        "split": list(arrays["split"]), "height": arrays["height"], "width": arrays["width"],
    })


def finalize(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    p: ExtractPoseParams = ctx.params
    kps = [a["keypoints"] for a, _ in ctx.iter_own_chunks()]
    kp = np.concatenate(kps) if kps else np.zeros((0, 17, 3), np.float32)
    scores = kp[..., 2]
    n = len(kp)
    no_person = int((scores.max(axis=1) <= 0).sum()) if n else 0
    confident = (scores > p.score_threshold).sum(axis=1) if n else np.zeros(0)
    stats = {
        "images": n,
        "no_person": no_person,
        "mean_score": round(float(scores.mean()), 4) if n else None,
        "frac_confident_12": round(float((confident >= CONFIDENT).mean()), 4) if n else None,
    }
    report = [
        f"{n} images, backend {p.backend}: mean keypoint score {stats['mean_score']}, "
        f"{100 * (stats['frac_confident_12'] or 0):.1f}% with >= {CONFIDENT} keypoints above {p.score_threshold}, "
        f"{no_person} with no person found (all-zero keypoints)",
    ]
    return stats | {"report": report}


SPEC = StageSpec(
    name="extract-pose", version=1,
    description="COCO-17 keypoints for every image (mmpose, movenet or mediapipe), batched",
    params=ExtractPoseParams, plan=plan, run_chunk=run_chunk, finalize=finalize,
    inputs={"dataset": "ingest.dataset"}, outputs={"keypoints": "chunks"},
)
