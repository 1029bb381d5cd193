"""Stage ``generate-unconditional``: LSRO's fakes, ``num_images`` samples of a ``train-dcgan`` generator.

Fake number ``i`` is the generator's image of the noise drawn from ``(seed, i)``
(:func:`reidaug.models.dcgan.noise_for`): the fakes are a pure function of the generator file, ``seed``
and ``i``, so a chunk recomputed after a kill gives the same bytes, and each fake records its provenance
(``noise_seed``, ``noise_index``, the generator checksum). They carry no identity (``pid`` -1) and no
camera or origin; ``assign-labels`` gives them LSRO's uniform label by default and ``export-hdf5`` stores
them with ``source = dcgan``. LSRO adds 24,000 to Market-1501's 12,936 train images (about 2 per real
image; its best ratio).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import GenerateParams, StageSpec
from reidaug.validation import MAX_SEED


class GenerateUnconditionalParams(GenerateParams):
    num_images: int = Field(1000, ge=1, le=100_000_000, description=(
        "how many fakes (LSRO: 24,000 for Market-1501's 12,936 train images)"))
    seed: int = Field(0, ge=0, le=MAX_SEED, description="noise seed: fake i is drawn from (seed, i)")
    chunk_size: int = Field(512, ge=1, le=100_000, description="fakes per chunk (the unit of resume)")


def plan(ctx: StageContext) -> int:
    from reidaug.gen.common import pick_device

    p: GenerateUnconditionalParams = ctx.params
    pick_device(p.device, "params.device")
    return -(-p.num_images // p.chunk_size)


def _generator(ctx: StageContext):
    from reidaug.gen.common import generator_once
    from reidaug.gen.unconditional import UnconditionalGenerator

    return generator_once(ctx, "generator", lambda device, **kw: UnconditionalGenerator.from_folder(
        ctx.input("models").path, device, **kw))


def fake_name(seed: int, index: int) -> str:
    return f"dcgan/s{seed}/{index:08d}.png"


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.gen.common import generate_pngs

    p: GenerateUnconditionalParams = ctx.params
    gen = _generator(ctx)
    ids = list(range(index * p.chunk_size, min(p.num_images, (index + 1) * p.chunk_size)))
    bs = p.batch_size_on(gen.device, gen.size)
    batches = [ids[s:s + bs] for s in range(0, len(ids), bs)]
    out_hw = p.out_hw(gen.size)
    pngs, seconds = generate_pngs(batches, lambda b: gen.noise(p.seed, b), gen.generate_tensor, gen.size, out_hw)
    n = len(ids)
    ctx.record(index, {"seconds": seconds, "device": str(gen.device), "images": n})
    ctx.write_chunk(index, {
        "image": pngs,
        "path": [fake_name(p.seed, i) for i in ids],
        "origin_path": [""] * n,  # no origin: an unconditional sample
        "pid": np.full(n, -1, np.int64),  # no identity
        "camid": np.full(n, -1, np.int16),
        "noise_seed": np.full(n, p.seed, np.int64),
        "noise_index": np.asarray(ids, np.int64),
        "gen_checksum": [gen.checksum] * n,
    })


def finalize(ctx: StageContext) -> dict[str, Any]:
    from reidaug.gen.common import generation_speed

    p: GenerateUnconditionalParams = ctx.params
    total = sum(len(arrays.get("path", [])) for arrays, _ in ctx.iter_own_chunks())
    speed, speed_text = generation_speed(ctx.own_stats(), total)
    report = [f"{total} unconditional fakes (DCGAN, noise seed {p.seed}); {speed_text}; no identity (LSRO labels "
              "them uniformly)"]
    return {"num_fakes": total, **speed, "report": report}


SPEC = StageSpec(
    name="generate-unconditional", version=1,
    description="LSRO's unconditional fakes: seeded DCGAN samples with provenance (noise seed and index)",
    params=GenerateUnconditionalParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"models": "train-dcgan.models"},
    outputs={"fakes": "chunks"},
)
