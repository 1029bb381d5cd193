"""Stage ``generate-camstyle``: every train image rendered in the style of the other cameras.

For each train image of camera s and each target camera t != s (``target_cams`` narrows the
targets; ``fakes_per_image`` draws that many of them per image, seeded), the generator of
``train-camstyle`` for (s, t) renders a fake. One chunk per ingest chunk, so it resumes like
every stage. Each fake carries its provenance: the origin image (path and ingest record), the
source and target camera, the identity it keeps, the generator and its weight checksum.

Batches group fakes of one (source, target) pair. Decoding and resizing (a thread ahead),
the model (this thread), and uint8 conversion plus PNG encoding (a thread behind) overlap
(:func:`reidaug.gen.common.overlapped`); on CUDA the model runs in bf16 autocast with
channels_last, inputs go through pinned memory. Fakes are stored as lossless PNG in the chunk;
``export-hdf5`` puts them into the ``camstyle`` set.

With a dataset-to-dataset model (``train-camstyle`` with ``domains: datasets``: PTGAN / SPGAN), every
train image of ``inputs.dataset`` — which must be that model's source ingest — is rendered once, in the
target dataset's style; its fake keeps the person, camera and label of its origin and records target
camera -1 (a dataset's style, not a camera's), with the same provenance otherwise.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import GenerateParams, StageSpec
from reidaug.validation import MAX_SEED


class GenerateCamStyleParams(GenerateParams):
    """Which fakes to make; device, amp, batch_size and the output size come
    from :class:`GenerateParams`."""

    target_cams: list[int] | None = Field(
        None, min_length=1, description="cameras to render into (default: every camera with a generator)")
    fakes_per_image: int | None = Field(None, ge=1, description="draw this many targets per image (default: all)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="for drawing targets when fakes_per_image is set")


def plan(ctx: StageContext) -> int:
    translator = _translator(ctx)
    if translator.domains == "datasets":
        _check_source(ctx)
    else:
        _wanted(ctx, translator.cameras)  # unknown target cameras: say so before any work
    return len(ctx.input("dataset").chunk_paths())


def _check_source(ctx: StageContext) -> None:
    """A dataset-to-dataset model renders its own source dataset only, and takes no camera options."""
    from reidaug.errors import ConfigError

    p: GenerateCamStyleParams = ctx.params
    models, data = ctx.inputs["models"], ctx.inputs["dataset"]
    trained = (models.meta.get("material") or {}).get("inputs") or {}
    bound = f"{data.key}:{data.output}"
    if trained.get("target") == bound:
        raise ConfigError(
            f"inputs.dataset ({data.stage}) is the target dataset the generators of {models.stage} learnt the style "
            "of; they render the source dataset into it. Fix: bind dataset to the source's ingest (the stage bound as "
            f"{models.stage}'s inputs.dataset).")
    if trained.get("dataset") and trained["dataset"] != bound:
        raise ConfigError(
            f"inputs.dataset ({data.stage}) is not the source dataset {models.stage} was trained on: a "
            "dataset-to-dataset generator has seen only its source's style. Fix: bind dataset to the ingest stage "
            f"bound as {models.stage}'s inputs.dataset.")
    for name in ("target_cams", "fakes_per_image"):
        if getattr(p, name) is not None:
            raise ConfigError(f"params.{name} picks target cameras, and the generators of {models.stage} translate "
                              "between datasets (one fake per train image, in the target's style). Fix: remove "
                              f"{name}.")


def _wanted(ctx: StageContext, available: list[int]) -> list[int]:
    from reidaug.errors import ConfigError

    p: GenerateCamStyleParams = ctx.params
    wanted = available if p.target_cams is None else sorted(set(p.target_cams))
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(f"params.target_cams {unknown} have no generator; the models "
                          f"of {ctx.input('models').path} cover cameras {available}. Fix: list cameras from those, "
                          "or train them in train-camstyle.")
    return wanted


class Fake(NamedTuple):
    """One fake to make: ingest row ``row`` of the chunk rendered in camera ``target``'s style."""

    row: int
    target: int


def draw_targets(cams, splits, wanted: list[int], fakes_per_image: int | None, rng,
                 route: Callable[[int, int], bool] = lambda s, t: True) -> list[Fake]:
    """The fakes of one chunk, in a fixed order: each train row of camera s in every wanted camera
    t != s that ``route(s, t)`` allows, or ``fakes_per_image`` of them drawn with ``rng`` (the
    camera-style stages share this rule: generate-camstyle and generate-colortransfer)."""
    jobs = []
    for row, (cam, split) in enumerate(zip(cams, splits)):
        if split != "train":
            continue
        options = [t for t in wanted if t != int(cam) and route(int(cam), t)]
        if fakes_per_image is not None and len(options) > fakes_per_image:
            options = sorted(rng.choice(options, size=fakes_per_image, replace=False).tolist())
        jobs.extend(Fake(row, t) for t in options)
    return jobs


def _targets(ctx: StageContext, translator, index: int, cams, splits) -> list[Fake]:
    """The fakes of one chunk, in a fixed order."""
    from reidaug.gen.camstyle import TARGET_DATASET

    p: GenerateCamStyleParams = ctx.params
    if translator.domains == "datasets":  # every train image, once, into the target dataset's style
        return [Fake(row, TARGET_DATASET) for row, split in enumerate(splits) if split == "train"]
    return draw_targets(cams, splits, _wanted(ctx, translator.cameras), p.fakes_per_image, ctx.rng(index),
                        translator.has_route)


def run_chunk(ctx: StageContext, index: int) -> None:
    import cv2
    import numpy as np

    from reidaug.data.images import decode_stored
    from reidaug.gen.camstyle import SOURCE_DATASET, TARGET_DATASET
    from reidaug.gen.common import generate_pngs
    from reidaug.pipeline.context import read_h5_chunk

    p: GenerateCamStyleParams = ctx.params
    translator = _translator(ctx)
    arrays, _ = read_h5_chunk(ctx.input("dataset").chunk_paths()[index])
    n = len(arrays["path"])
    cams = [int(c) for c in arrays["camid"]] if n else []
    jobs = _targets(ctx, translator, index, cams, arrays["split"] if n else [])

    def source(row: int) -> int:  # the route's start: the camera, or the source dataset
        return SOURCE_DATASET if translator.domains == "datasets" else cams[row]

    jobs.sort(key=lambda j: (source(j.row), j.target, j.row))  # batches of one (source, target) pair
    h, w = translator.size
    batch_size = p.batch_size_on(translator.device, (h, w))
    batches = []
    for start in range(0, len(jobs), batch_size):
        group = jobs[start:start + batch_size]
        # split where the pair changes
        cur: list[Fake] = []
        for j in group:
            if cur and (source(cur[0].row), cur[0].target) != (source(j.row), j.target):
                batches.append(cur)
                cur = []
            cur.append(j)
        batches.append(cur)
    decoded: dict[int, np.ndarray] = {}

    def prepare(batch: list[Fake]):
        imgs = []
        for row, _ in batch:
            if row not in decoded:
                decoded[row] = cv2.resize(decode_stored(arrays["image"][row]), (w, h), interpolation=cv2.INTER_LINEAR)
            imgs.append(decoded[row])
        return batch, translator.to_tensor(np.stack(imgs))

    def compute(item):
        batch, x = item
        return translator.translate_tensor(x, source(batch[0].row), batch[0].target)

    pngs, seconds = generate_pngs(batches, prepare, compute, (h, w), p.out_hw((h, w)))
    results = dict(zip((job for batch in batches for job in batch), pngs))
    order = sorted(jobs)  # stored in ingest order, then target camera
    paths = [str(p_) for p_ in arrays["path"]] if n else []
    ctx.record(index, {"seconds": seconds, "device": str(translator.device), "images": len(order)})
    ctx.write_chunk(index, {
        "image": [results[j] for j in order],
        "path": [fake_name(paths[j.row], cams[j.row], j.target) for j in order],
        "origin_path": [paths[j.row] for j in order],
        "origin_record": np.asarray([int(arrays["record_index"][j.row]) for j in order], np.int64),
        "pid": np.asarray([int(arrays["pid"][j.row]) for j in order], np.int64),
        "camid": np.asarray([cams[j.row] for j in order], np.int16),
        "target_camid": np.asarray([-1 if j.target == TARGET_DATASET else j.target for j in order], np.int16),
        "gen_checksum": [translator.checksum(source(j.row), j.target) for j in order],
    })


def fake_name(origin: str, source_cam: int, target_cam: int) -> str:
    """``camstyle/<origin path without extension>_fake_c<s>to<t>.png`` (``..._fake_to_target.png`` for a
    dataset-to-dataset fake, target camera < 0): the whole relative path, not the file name alone, since
    folder datasets repeat file names across identity folders (``0001/0.jpg``, ``0002/0.jpg``) and
    assign-labels / export-hdf5 match fakes by name."""
    last = origin.rsplit("/", 1)[-1]
    stem = origin.rsplit(".", 1)[0] if "." in last else origin  # drop the extension only
    if target_cam < 0:
        return f"camstyle/{stem}_fake_to_target.png"
    return f"camstyle/{stem}_fake_c{source_cam}to{target_cam}.png"


def _translator(ctx: StageContext):
    """The generators of the models input on ``params.device``, loaded once per thread (ctx.memo): chunks
    reuse them."""
    from reidaug.gen.camstyle import CamStyleTranslator
    from reidaug.gen.common import generator_once

    return generator_once(ctx, "translator",
                          lambda device, **kw: CamStyleTranslator(ctx.input("models").path, device, **kw))


def finalize(ctx: StageContext) -> dict[str, Any]:
    from collections import Counter

    from reidaug.gen.common import generation_speed

    total, per_target = 0, Counter()
    for arrays, _ in ctx.iter_own_chunks():
        total += len(arrays.get("path", []))
        per_target.update(int(t) for t in arrays.get("target_camid", []))
    speed, speed_text = generation_speed(ctx.own_stats(), total)
    def where(c: int) -> str:
        return "to the target dataset's style" if c < 0 else f"to camera {c}"

    report = [f"{total} CamStyle fakes ({', '.join(f'{where(c)}: {n}' for c, n in sorted(per_target.items()))}); "
              f"{speed_text}"]
    return {"num_fakes": total, "per_target_camera": {str(k): v for k, v in sorted(per_target.items())},
            **speed, "report": report}


SPEC = StageSpec(
    name="generate-camstyle", version=3,  # 3: torch threads pinned; timings out of the chunk
    description="CamStyle fakes: each train image in the style of the other cameras, batched, with provenance",
    params=GenerateCamStyleParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "models": "train-camstyle.models"},
    outputs={"fakes": "chunks"},
)
