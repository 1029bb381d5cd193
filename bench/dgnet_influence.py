"""How much of a DG-Net swap comes from its appearance source, for a training checkpoint or a finished
generator: :func:`reidaug.gen.dgnet.appearance_influence` over the swap matrix of ``--ids`` held-out
identities, and the size of the AdaIN parameters the appearance code makes (scale ``1 + gamma``, bias
``beta``). Reads a ``train-dgnet`` entry or its ``.partial`` folder (a run still training) and the ingest
entry beside it. score-dgnet reports the same influence for a finished generator; this script also reads
checkpoints, so two trainings (e.g. two initialisations) can be compared at equal steps.

    python bench/dgnet_influence.py WS/cache/train-dgnet/f9/f928...partial WS/cache/ingest/e8/e83c... [--ids 32]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train_entry", type=Path, help="train-dgnet cache entry or its .partial folder")
    ap.add_argument("ingest_entry", type=Path, help="the ingest cache entry the training read")
    ap.add_argument("--ids", type=int, default=32, help="held-out identities on each side of the swap matrix")
    ap.add_argument("--split", default="query")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from reidaug.gen.common import images_to_device
    from reidaug.gen.dgnet import (MODEL, DGNetGenerator, _spread_identities, appearance_influence,
                                   collect_identity_images, swap_grid)
    from reidaug.models.dgnet import DGNet
    from reidaug.pipeline.context import read_h5_chunk

    def to_cpu(images):
        return images_to_device(images, torch.device("cpu"))

    finished = args.train_entry / "models" / f"{MODEL}.pt"
    ckpts = sorted(args.train_entry.rglob("checkpoint.pt"))
    if finished.is_file():
        gen = DGNetGenerator(finished, torch.device("cpu"), amp=False, where="dgnet_influence")
        model, where, step = gen.model, finished, "end"
    elif ckpts:  # a training still running (or killed): its last checkpoint
        state = torch.load(ckpts[0], map_location="cpu", weights_only=False)["model"]
        model = DGNet.from_state_dict(state).eval()
        where, step = ckpts[0], json.loads(Path(f"{ckpts[0]}.json").read_text()).get("step")
    else:
        ap.error(f"{args.train_entry} holds neither models/{MODEL}.pt nor a checkpoint.pt: is it a train-dgnet entry?")
    size = (model.config.image_height, model.config.image_width)
    chunks = (read_h5_chunk(p) for p in sorted((args.ingest_entry / "chunks").glob("*.h5")))
    held = collect_identity_images(chunks, size, split=args.split)
    images = held.images[_spread_identities(held, args.ids)]
    with torch.no_grad():
        # (k, n_res, 2 AdaIN layers, (gamma, beta), C)
        params = model.G_dec.adain_params(model.encode_appearance(to_cpu(images)))
    out = {"from": str(where), "step": step,
           **appearance_influence(swap_grid(model, images, to_cpu), images),
           "adain_gamma_abs_mean": float(params[:, :, :, 0].abs().mean()),
           "adain_beta_abs_mean": float(params[:, :, :, 1].abs().mean()),
           "adain_gamma_std_across_people": float(params[:, :, :, 0].std(0).mean()),
           "adain_beta_std_across_people": float(params[:, :, :, 1].std(0).mean())}
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
