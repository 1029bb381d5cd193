"""Stage ``generate-dgnet``: DG-Net's swaps, one train image's clothes on another's structure (issue 19).

For each train image i of the ingest chunk (the appearance source: clothes, colour, identity) the stage
draws ``per_image`` structure donors j of other identities (``pairs``: ``random`` among all train images,
``same-camera`` or ``cross-camera`` relative to i; seeded per chunk) and renders G(a_i, s_j) with a
``train-dgnet`` generator: N x per_image new images from N, no pose estimator needed. One chunk per ingest
chunk (the appearance sources), so it resumes like every stage; the donors come from the whole train
split. Each fake carries its provenance: the appearance source (``origin_path``, ``origin_record``,
``pid``: the identity it shows, which DG-Net's primary feature learning labels), the structure source
(``structure_path``, ``structure_record``, ``structure_pid``: DG-Net's fine-grained mining target), the
camera of the structure source (the background and viewpoint come with the structure: ``camid``) and the
generator checksum. Stored as lossless PNG at the generator's size (or ``height`` x ``width``).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import GenerateParams, StageSpec
from reidaug.validation import MAX_SEED


class GenerateDGNetParams(GenerateParams):
    pairs: Literal["random", "same-camera", "cross-camera"] = Field(
        "random", description="structure donors: any train image of another identity, or of the same / another camera")
    per_image: int = Field(1, ge=1, le=10_000, description="swaps per appearance source (DG-Net: N x N in all)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="draws the donors (per chunk)")


def plan(ctx: StageContext) -> int:
    from reidaug.gen.common import pick_device

    pick_device(ctx.params.device, "params.device")
    return len(ctx.input("dataset").chunk_paths())


def _generator(ctx: StageContext):
    from reidaug.gen.common import generator_once
    from reidaug.gen.dgnet import DGNetGenerator

    return generator_once(ctx, "generator",
                          lambda device, **kw: DGNetGenerator.from_folder(ctx.input("models").path, device, **kw))


def _train_split(ctx: StageContext, size: tuple[int, int]):
    """Every train image of the dataset at the generator's size (decoded once per worker)."""
    from reidaug.gen.dgnet import collect_identity_images

    return ctx.memo(f"train|{size}", lambda: collect_identity_images(ctx.input("dataset").iter_chunks(), size))


def fake_name(appearance: str, structure: str) -> str:
    """``dgnet/<appearance path without extension>__s_<structure path without extension>.png``."""
    def stem(path: str) -> str:
        last = path.rsplit("/", 1)[-1]
        return path.rsplit(".", 1)[0] if "." in last else path

    return f"dgnet/{stem(appearance)}__s_{stem(structure).replace('/', '_')}.png"


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.gen.common import generate_pngs, images_to_device
    from reidaug.gen.dgnet import draw_swaps
    from reidaug.pipeline.context import read_h5_chunk

    p: GenerateDGNetParams = ctx.params
    gen = _generator(ctx)
    train = _train_split(ctx, gen.size)
    arrays, _ = read_h5_chunk(ctx.input("dataset").chunk_paths()[index])
    row_of = {int(r): k for k, r in enumerate(train.records)}  # ingest record -> row of the train split
    mine = [row_of[int(r)] for r, s in zip(arrays.get("record_index", []), arrays.get("split", []))
            if s == "train"]
    swaps, short = draw_swaps(train.labels, train.camids, mine, p.pairs, p.per_image, ctx.rng(index))
    bs = p.batch_size_on(gen.device, gen.size)
    batches = [swaps[s:s + bs] for s in range(0, len(swaps), bs)]

    def prepare(batch):  # decode-free: the train split is in memory; to the device here, ahead of the model
        return (images_to_device(train.images[[w.appearance for w in batch]], gen.device),
                images_to_device(train.images[[w.structure for w in batch]], gen.device))

    def compute(item):
        return gen.swap_tensor(*item)

    pngs, seconds = generate_pngs(batches, prepare, compute, gen.size, p.out_hw(gen.size))
    a = [w.appearance for w in swaps]
    s = [w.structure for w in swaps]
    ctx.record(index, {"seconds": seconds, "device": str(gen.device), "images": len(swaps),
                       "rows_short_of_donors": short})
    ctx.write_chunk(index, {
        "image": pngs,
        "path": [fake_name(train.paths[i], train.paths[j]) for i, j in zip(a, s)],
        "origin_path": [train.paths[i] for i in a],
        "origin_record": np.asarray([train.records[i] for i in a], np.int64),
        "pid": np.asarray([train.pids[i] for i in a], np.int64),
        "camid": np.asarray([train.camids[j] for j in s], np.int16),
        "origin_camid": np.asarray([train.camids[i] for i in a], np.int16),
        "structure_path": [train.paths[j] for j in s],
        "structure_record": np.asarray([train.records[j] for j in s], np.int64),
        "structure_pid": np.asarray([train.pids[j] for j in s], np.int64),
        "gen_checksum": [gen.checksum] * len(swaps),
    })


def finalize(ctx: StageContext) -> dict[str, Any]:
    from reidaug.gen.common import generation_speed

    p: GenerateDGNetParams = ctx.params
    total = sum(len(arrays.get("path", [])) for arrays, _ in ctx.iter_own_chunks())
    stats = ctx.own_stats()
    short = sum(int(st.get("rows_short_of_donors", 0)) for st in stats)
    speed, speed_text = generation_speed(stats, total)
    report = [f"{total} DG-Net swaps ({p.per_image} per train image, {p.pairs} structure donors of other "
              f"identities); {speed_text}"]
    if short:
        report.append(f"  {short} train images had fewer than {p.per_image} {p.pairs} donors and got all they had")
    return {"num_fakes": total, "pairs": p.pairs, "per_image": p.per_image, "rows_short_of_donors": short,
            **speed, "report": report}


SPEC = StageSpec(
    name="generate-dgnet", version=1,
    description="DG-Net swaps: each train image's appearance on other identities' structure, with provenance",
    params=GenerateDGNetParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "models": "train-dgnet.models"},
    outputs={"fakes": "chunks"},
)
