"""Stage ``score-dgnet``: a DG-Net generator on held-out identities (issue 19).

On images of the *test* identities (never seen in training), DG-Net's two reconstructions, scored with SSIM
against the real image x_i: the self reconstruction G(a_i, s_i) and the same-identity reconstruction
G(a_t, s_i), t another image of i's identity (the clothes must come from another photo of the person), beside
the baseline of that other photo itself (x_t vs x_i: what "copy another image of the person" scores). And
``swaps.png``: the swap matrix of ``grid`` held-out images of different identities (rows: appearance,
columns: structure; the diagonal reconstructs). The judge's identity and FReID of the swaps are score-fakes'
(bind it to an export with the dgnet set). And ``appearance_influence``: over the full swap matrix of
``influence_ids`` held-out identities, the pixel spread across appearance sources against that across
structure sources, and how often a swap's colour follows its appearance source
(:func:`reidaug.gen.dgnet.appearance_influence`): a decoder that ignores ``a`` or takes only brightness from it
shows there before any re-ID arm is trained. With ``judge``, ``judge_identity``: whose person an external
re-ID model finds in those swaps among the split's other images, the appearance source's (the identity
DG-Net's labels give the swap) or the structure source's (:func:`reidaug.gen.dgnet.judge_identity_of_swaps`).
Writes ``metrics.json`` and ``swaps.png``.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import BatchedGPUParams, FileParam, StageSpec
from reidaug.validation import MAX_SEED

METRICS = "metrics.json"
PICTURE = "swaps.png"


class ScoreDGNetParams(BatchedGPUParams):
    split: str = Field("query", description="held-out split whose identities score the generator (query / gallery)")
    num_images: int = Field(500, ge=2, le=1_000_000, description="held-out images scored (drawn with seed)")
    grid: int = Field(6, ge=2, le=16, description="identities on each side of swaps.png")
    influence_ids: int = Field(32, ge=2, le=64, description="identities of the full swap matrix that measures "
                               "how much of a swap comes from its appearance source (appearance_influence; k^2 "
                               "swaps held in memory, 64^2 at 256 x 128 = 1.6 GB as floats)")
    judge: FileParam | None = Field(
        None, description="ONNX re-ID model (e.g. osnet_x0_25_msmt17.onnx): whose person it sees in the swaps of "
                          "the influence matrix, the appearance source's or the structure source's; none: skipped")
    seed: int = Field(0, ge=0, le=MAX_SEED)


def plan(ctx: StageContext) -> int:
    from reidaug.errors import ConfigError
    from reidaug.gen.common import pick_device

    p: ScoreDGNetParams = ctx.params
    pick_device(p.device, "params.device")
    if p.split == "train":
        raise ConfigError("params.split: train holds the identities the generator learnt; scores on them say how "
                          "well it memorised. Fix: query or gallery (the held-out test identities).")
    return 1


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.errors import DataError
    from reidaug.eval.ssim import paired_ssim
    from reidaug.gen.common import images_to_device, pick_device
    from reidaug.gen.dgnet import (DGNetGenerator, _spread_identities, appearance_influence, collect_identity_images,
                                   judge_identity_of_swaps, swap_grid, swap_matrix)
    from reidaug.io.atomic import write_json

    p: ScoreDGNetParams = ctx.params
    device = pick_device(p.device, "params.device")
    gen = DGNetGenerator.from_folder(ctx.input("models").path, device, amp=p.amp)
    held = collect_identity_images(ctx.input("dataset").iter_chunks(), gen.size, split=p.split)
    rng = np.random.default_rng(p.seed)
    # images whose identity has another image in the split: the partner t of each scored i
    by_label = {lbl: np.flatnonzero(held.labels == lbl) for lbl in np.unique(held.labels)}
    usable = np.asarray([i for i in range(len(held.labels)) if len(by_label[held.labels[i]]) > 1], np.int64)
    if len(usable) < 2:
        raise DataError(f"the {p.split} split has no identity with two images; the same-identity reconstruction "
                        "needs another image of the person. Fix: score on a split with several images per identity.")
    pick = np.sort(rng.choice(usable, size=min(p.num_images, len(usable)), replace=False))
    partner = np.asarray([rng.choice(by_label[held.labels[i]][by_label[held.labels[i]] != i]) for i in pick])
    bs = p.batch_size_on(device, gen.size)
    self_rec, cross_rec = [], []
    for s in range(0, len(pick), bs):
        x = held.images[pick[s:s + bs]]
        t = held.images[partner[s:s + bs]]
        self_rec.append(gen.swap(x, x))
        cross_rec.append(gen.swap(t, x))  # the clothes of another photo of i on i's structure
    refs = list(held.images[pick])
    s_self, _ = paired_ssim(list(np.concatenate(self_rec)), refs, None)
    s_cross, _ = paired_ssim(list(np.concatenate(cross_rec)), refs, None)
    s_base, _ = paired_ssim(list(held.images[partner]), refs, None)

    def summ(v: np.ndarray) -> dict[str, float]:
        return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": int(len(v))}

    def to_dev(images: np.ndarray):
        return images_to_device(images, device)

    sources = _spread_identities(held, p.influence_ids)
    swaps = swap_grid(gen.model, held.images[sources], to_dev)
    influence = appearance_influence(swaps, held.images[sources])
    judged = None
    if p.judge is not None:
        from reidaug.eval.judge import OSNetJudge

        judge = OSNetJudge(p.judge.path)
        k = len(sources)
        gallery = np.setdiff1d(np.arange(len(held.labels)), sources)
        judged = judge_identity_of_swaps(
            judge.features(swaps.reshape(k * k, *swaps.shape[2:])).reshape(k, k, -1),
            judge.features(held.images[sources]), held.labels[sources],
            judge.features(held.images[gallery]), held.labels[gallery])
    metrics = {"split": p.split, "num_images": int(len(pick)), "num_ids": int(len(np.unique(held.labels[pick]))),
               "ssim_self_reconstruction": summ(s_self), "ssim_same_identity_reconstruction": summ(s_cross),
               "ssim_other_photo_baseline": summ(s_base), "appearance_influence": influence,
               "judge_identity": judged,
               "generator_checksum": gen.checksum}
    write_json(ctx.work_dir / METRICS, metrics)
    grid = _spread_identities(held, p.grid)
    swap_matrix(gen.model, held.images[grid], ctx.work_dir / PICTURE, to_dev)
    ctx.write_chunk(index, {"ssim_self": float(np.mean(s_self)), "ssim_same_identity": float(np.mean(s_cross)),
                            "ssim_baseline": float(np.mean(s_base)), "num_images": int(len(pick))})


def finalize(ctx: StageContext) -> dict[str, Any]:
    import json

    p: ScoreDGNetParams = ctx.params
    m = json.loads((ctx.work_dir / METRICS).read_text())
    line = (f"{m['num_images']} held-out {p.split} images of {m['num_ids']} identities never trained on: SSIM of "
            f"G(a_i, s_i) {m['ssim_self_reconstruction']['mean']:.3f}, of G(a of another photo of i, s_i) "
            f"{m['ssim_same_identity_reconstruction']['mean']:.3f}, the other photo itself (baseline) "
            f"{m['ssim_other_photo_baseline']['mean']:.3f}")
    inf = m["appearance_influence"]
    line2 = (f"appearance influence over the {inf['num_ids']} x {inf['num_ids']} swap matrix: pixel std across "
             f"appearance sources {inf['appearance_std']:.3f}, across structure sources {inf['structure_std']:.3f} "
             f"(share {inf['appearance_share']:.2f}; real images {inf['real_std']:.3f}); colour follows the "
             f"appearance source in {100 * inf['colour_from_appearance']:.0f}% of swaps (50%: not moved)")
    j = m.get("judge_identity")
    line3 = ("no judge: whose person the swaps show is not scored (set judge)" if j is None else
             f"the judge finds, nearest among {j['gallery']} other held-out images, the appearance source's person "
             f"in {100 * j['appearance']:.1f}% of {j['num_swaps']} swaps, the structure source's in "
             f"{100 * j['structure']:.1f}%, neither in {100 * j['neither']:.1f}% (real images: rank-1 "
             f"{100 * j['real_rank1']:.1f}%)")
    return {**m, "report": [line, line2, line3, f"swap matrix of held-out identities: {PICTURE} in this entry"]}


SPEC = StageSpec(
    name="score-dgnet", version=2,
    description="DG-Net on held-out identities: SSIM of its reconstructions, how much of a swap its appearance "
                "code makes, whose person a judge finds in the swaps, the swap matrix",
    params=ScoreDGNetParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "models": "train-dgnet.models"},
    outputs={"metrics": METRICS, "picture": PICTURE, "chunks": "chunks"},
)
