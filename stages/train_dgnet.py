"""Stage ``train-dgnet``: DG-Net's appearance / structure generator on the train split (issue 19).

Zheng et al., "Joint Discriminative and Generative Learning for Person Re-identification" (CVPR 2019):
each image is encoded into an appearance code (a re-ID encoder from the trainer's backbone registry, with
an identity classifier: clothes, colour) and a structure code (a shallow encoder on the grey image: pose,
body shape, background); a decoder with AdaIN puts person i's clothes on person j's structure. Losses,
weights, warm-up and optimisers are the reference's (:mod:`reidaug.models.dgnet` says where it deviates:
128 x 64, EfficientNet-Lite0 and a 512-d code for the CPU).

One chunk (one model) trained by the one resumable loop in ``train/dgnet/`` (atomic checkpoints, a killed
run resumes bit-identically on the CPU, a loss log, the swap-matrix grid of fixed train images every
``sample_every`` steps). Output ``models/dgnet.pt``: the two encoders and the decoder, the config and their
checksum, which every swap of ``generate-dgnet`` cites. Budget: the reference trains 100k steps of 8
triplets at 256 x 128 on a GPU; a step of 8 at 128 x 64 costs seconds on a 2-core CPU.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import FileParam, GPUTrainParams, StageSpec
from reidaug.validation import MAX_SEED

MODELS_DIR = "models"
TRAIN_DIR = "train"


class TrainDGNetParams(GPUTrainParams):
    image_height: int = Field(128, ge=16, le=1024, description="training size (DG-Net: 256 x 128)")
    image_width: int = Field(64, ge=8, le=512)
    app_backbone: str = Field("efficientnet_lite0", description="appearance encoder: a reidaug train backbone")
    app_pretrained: Literal["imagenet", "none"] | FileParam = Field(
        "imagenet", description="imagenet | none | an ImageNet state_dict file (keyed by content)")
    app_dim: int = Field(512, ge=8, le=16384, description="appearance code length (DG-Net: 4 x 2048)")
    struct_dim: int = Field(16, ge=4, le=256, description="structure encoder width (its code has 8x channels)")
    n_res: int = Field(4, ge=1, le=16, description="residual blocks of the structure encoder and the decoder")
    mlp_dim: int = Field(512, ge=8, le=8192)
    ndf: int = Field(32, ge=4, le=512, description="discriminator width")
    d_scales: int = Field(3, ge=1, le=6, description="discriminator scales (DG-Net: 3)")
    d_layers: int = Field(2, ge=1, le=6, description="stride-2 convolutions per discriminator scale")
    d_res: int = Field(4, ge=0, le=16, description="residual blocks per discriminator scale")
    lambda_x: float = Field(5.0, ge=0, le=1e6, description="self reconstruction G(a_i, s_i) -> x_i")
    lambda_xp: float = Field(5.0, ge=0, le=1e6, description="G(a of another image of i, s_i) -> x_i")
    lambda_id_fake: float = Field(0.5, ge=0, le=1e6, description="identity loss on the swaps (appearance source)")
    g_init: Literal["normal", "kaiming"] = Field(
        "normal", description="structure encoder and decoder weights: normal N(0, 0.02) (the first runs) or kaiming "
                              "(the reference's; the decoder then starts modulated by the appearance code)")
    d_init: Literal["normal", "kaiming"] = Field(
        "normal", description="discriminator weights: normal N(0, 0.02) (the reference's; it starts blind to the "
                              "image, ~1e-6) or kaiming (starts image-sensitive; on CUHK01 the generator then "
                              "ignored the appearance code: not advised)")
    iterations: int = Field(10000, ge=1, le=100_000_000, description="training steps (the schedules scale with it)")
    train_batch: int = Field(8, ge=2, le=1024, description="triplets per step (DG-Net: 8)")
    flip: bool = True
    seed: int = Field(0, ge=0, le=MAX_SEED)

    def hyper(self) -> dict[str, Any]:
        hp = {k: getattr(self, k) for k in ("image_height", "image_width", "app_backbone", "app_dim", "struct_dim",
                                            "n_res", "mlp_dim", "ndf", "d_scales", "d_layers", "d_res", "lambda_x",
                                            "lambda_xp", "lambda_id_fake", "g_init", "d_init")}
        hp["app_pretrained"] = self.app_pretrained if isinstance(self.app_pretrained, str) \
            else str(self.app_pretrained.path)
        return hp


def plan(ctx: StageContext) -> int:
    from reidaug.errors import ConfigError, unknown_name
    from reidaug.gen.common import pick_device
    from reidaug.train.backbones import BACKBONES

    p: TrainDGNetParams = ctx.params
    pick_device(p.device, "params.device")
    if p.app_backbone not in BACKBONES:
        raise unknown_name("app_backbone", p.app_backbone, BACKBONES)
    if p.image_height % 4 or p.image_width % 4:
        raise ConfigError(f"params.image_height x image_width = {p.image_height} x {p.image_width}: the structure "
                          "code is a quarter of the image, so both must be multiples of 4. Fix: e.g. 128 x 64.")
    return 1


def run_chunk(ctx: StageContext, index: int) -> None:
    from reidaug.gen.common import pick_device
    from reidaug.gen.dgnet import MODEL, TrainSettings, collect_identity_images, train_model
    from reidaug.gen.loop import finish_run

    p: TrainDGNetParams = ctx.params
    device = pick_device(p.device, "params.device")
    data = collect_identity_images(ctx.input("dataset").iter_chunks(), (p.image_height, p.image_width))
    settings = TrainSettings(iterations=p.iterations, train_batch=p.train_batch, seed=p.seed, flip=p.flip,
                             **p.cadence())
    run_dir = ctx.work_dir / TRAIN_DIR / MODEL
    out = train_model(data, p.hyper(), settings, run_dir, ctx.work_dir / MODELS_DIR / f"{MODEL}.pt", device,
                      amp=p.amp)
    finish_run(run_dir, p.keep_checkpoints)
    ctx.record(index, {"seconds": out.seconds, "images_per_s": out.images_per_s, "device": str(device),
                       "resumed_from": out.resumed_from})
    ctx.write_chunk(index, {"steps": out.steps, "train_images": len(data.labels),
                            "train_ids": data.num_classes},
                    attrs={"checksum": out.checksum, "last_losses": out.last_losses})


def finalize(ctx: StageContext) -> dict[str, Any]:
    from reidaug.gen.common import run_record, timing_text
    from reidaug.gen.dgnet import MODEL

    p: TrainDGNetParams = ctx.params
    arrays, attrs = next(ctx.iter_own_chunks())
    stats = next(iter(ctx.own_stats()), {})
    losses = {k: round(float(v), 4) for k, v in (attrs.get("last_losses") or {}).items()}
    shown = ", ".join(f"{k} {losses[k]:.3f}" for k in ("rec_x", "rec_xp", "rec_a", "rec_s", "id_real", "id_fake",
                                                       "G_adv", "D") if k in losses)
    report = [
        f"{MODEL}: {int(arrays['steps'])} steps of {p.train_batch} triplets on {int(arrays['train_images'])} train "
        f"images of {int(arrays['train_ids'])} identities{timing_text(stats, 'img/s', 'images_per_s')}; "
        f"last losses: {shown}",
        f"generator: {MODELS_DIR}/{MODEL}.pt (checksum {attrs['checksum'][:12]}); swap-matrix grids and loss log: "
        f"{TRAIN_DIR}/{MODEL}/",
    ]
    return {"model": MODEL, "checksum": attrs["checksum"], "steps": int(arrays["steps"]),
            "train_images": int(arrays["train_images"]), "train_ids": int(arrays["train_ids"]),
            "last_losses": losses,
            **run_record(stats, "images_per_s"), "report": report}


SPEC = StageSpec(
    name="train-dgnet", version=1,
    description="DG-Net's appearance / structure generator on the train split, resumable",
    params=TrainDGNetParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset"},
    outputs={"models": MODELS_DIR, "train": TRAIN_DIR, "chunks": "chunks"},
    unkeyed_at_default=frozenset({"g_init", "d_init"}),  # added after the first CUHK01 runs: their keys stay
)
