"""Stage ``demo-data``: the embedded synthetic re-ID dataset (the demo's default source).

Draws N identities under C camera styles in the Market-1501 file layout, with ground-truth
COCO-17 keypoints and, for every image, the same person under every other camera's style
(see :mod:`reidaug.data.synthetic`). Its output folder is a Market-1501 root that ``ingest``
reads like any real dataset. One chunk: the generator takes about a second at the demo size.
"""
from __future__ import annotations

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import Params, StageSpec
from reidaug.validation import MAX_SEED

OUTPUT_DIR = "dataset"


class DemoDataParams(Params):
    num_ids: int = Field(24, ge=2, le=9999, description="identities; the first half train, the rest test")
    num_cams: int = Field(2, ge=2, le=6, description="cameras, each with its own style")
    images_per_id_per_cam: int = Field(4, ge=2, le=1000)
    height: int = Field(128, ge=32, le=1024)
    width: int = Field(64, ge=16, le=1024)
    seed: int = Field(0, ge=0, le=MAX_SEED)


def run_chunk(ctx: StageContext, index: int) -> None:
    from reidaug.data.synthetic import SyntheticSpec, write_dataset  # cv2: keep planning light

    p: DemoDataParams = ctx.params
    spec = SyntheticSpec(num_ids=p.num_ids, num_cams=p.num_cams, images_per_id_per_cam=p.images_per_id_per_cam,
                         height=p.height, width=p.width, seed=p.seed)
    summary = write_dataset(ctx.work_dir / OUTPUT_DIR, spec)  # atomic: a folder under a temp name, renamed
    ctx.write_chunk(index, {
        "num_train": summary.num_train, "num_query": summary.num_query, "num_gallery": summary.num_gallery,
        "num_train_ids": summary.num_train_ids, "num_test_ids": summary.num_test_ids,
    })


def finalize(ctx: StageContext) -> dict:
    arrays, _ = next(ctx.iter_own_chunks())
    counts = {k: int(v) for k, v in arrays.items()}
    p: DemoDataParams = ctx.params
    return {
        **counts,
        "report": [
            f"synthetic Market-1501 layout, {p.num_ids} ids x {p.num_cams} cameras at {p.height}x{p.width}: "
            f"{counts['num_train']} train / {counts['num_query']} query / {counts['num_gallery']} gallery images "
            "(folder dataset/ of this entry)"
        ],
    }


SPEC = StageSpec(
    name="demo-data", version=1,
    description="synthetic pedestrians in the Market-1501 layout, with keypoints and camera-style ground truth",
    params=DemoDataParams, run_chunk=run_chunk, finalize=finalize,
    outputs={"dataset": OUTPUT_DIR, "chunks": "chunks"},
)
