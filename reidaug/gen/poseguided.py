"""Pose-guided generation (PG2, Deformable GAN): training pairs, resumable training, inference.

A pose-guided generator renders the person of a *condition* image in a *target* pose given as
COCO-17 keypoints: PG2 (Ma et al., "Pose Guided Person Image Generation", NeurIPS 2017;
:mod:`reidaug.models.pg2`) and Deformable GAN (Siarohin et al., "Deformable GANs for
Pose-based Human Image Generation", CVPR 2018; :mod:`reidaug.models.deformable`). Both train
on pairs of images of one identity in two poses: the generator sees image A and pose B and is
pulled towards image B.

- :func:`collect_pose_images` — the images of a split at the model's size, with their
  keypoints rescaled to that frame and the points at or below the score threshold zeroed (the
  "score 0 means missing" contract of :mod:`reidaug.pose.representations`), and how many
  confident keypoints each has.
- :func:`make_pairs` — every ordered pair of usable images (enough confident keypoints) of one
  identity whose poses differ (mean keypoint displacement above ``min_pose_change`` of the
  image height), optionally a seeded draw of ``max_pairs`` of them; what was left out and why
  is counted. Works on any split, so held-out pairs of the test identities come from the same
  rule.
- :func:`train_model` — resumable training: the whole state (networks, optimisers, step, and
  Deformable GAN's dropout RNG) is checkpointed atomically every ``checkpoint_every`` steps,
  and the pairs of step ``t`` are a function of ``(seed, t)`` only, so a killed run resumed
  from its last checkpoint continues exactly as an uninterrupted run would (on the CPU,
  bit-identically). PG2 trains G1 for ``iterations_g1`` steps, then G2 and D for the rest (the
  paper's two stages); learning rates are constant, as both papers. A JSON-lines loss log and
  sample grids (condition, target pose, G1, G2 / generated, ground truth). No flip or crop
  augmentation: it would have to move the keypoints with the pixels.
- :class:`PoseGuidedGenerator` / :func:`generate_fakes` — inference from the generator file
  training writes (``models/<model>.pt``): condition images of any size with their keypoints,
  target keypoints in any frame, batched; what ``generate-poseguided`` runs and what metric
  code can call on arbitrary (condition image, target pose) pairs.

Keypoints are COCO-17 ``(x, y, score)`` in pixels everywhere; a frame change rescales them with
the pixel-centre convention of ``cv2.resize`` (``x' = (x + 0.5) * W' / W - 0.5``), the same one
the images are resized with.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from reidaug.errors import DataError
from reidaug.data.images import image_grid
from reidaug.gen.common import autocast, images_to_device, inference_autocast, to_uint8_images
from reidaug.gen.loop import Phase, generator_weights, load_generator, save_generator, train_loop
from reidaug.io.checkpoint import load_torch
from reidaug.pose.keypoints import confident_mask, rescale_keypoints

MODELS = ("pg2", "deformable")
NUM_KEYPOINTS = 17


# --------------------------------------------------------------------------------------------
# Keypoints
# --------------------------------------------------------------------------------------------
def count_confident(kp: np.ndarray, threshold: float) -> np.ndarray:
    """``(N,)`` int64: how many keypoints of each pose are confident."""
    return confident_mask(kp, threshold).sum(-1).astype(np.int64)


def clean_keypoints(kp: np.ndarray, threshold: float) -> np.ndarray:
    """A copy with the keypoints that are not confident set to ``(0, 0, 0)``, so every consumer
    (heatmaps, masks, part affines) sees them as missing with its default threshold 0."""
    out = np.array(kp, dtype=np.float32, copy=True)
    ok = confident_mask(out, threshold)
    out[~ok] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# Images and pairs
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PoseImages:
    """The images of one split at a model's size, with their keypoints in that frame."""

    images: np.ndarray  # (N, H, W, 3) uint8
    keypoints: np.ndarray  # (N, 17, 3) float32, model frame; non-confident points zeroed
    confident: np.ndarray  # (N,) int64 confident keypoints (score > threshold)
    paths: list[str]
    pids: np.ndarray  # (N,) int64
    camids: np.ndarray  # (N,) int64
    records: np.ndarray  # (N,) int64 ingest record index

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, index: np.ndarray) -> "PoseImages":
        """The rows ``index`` (int array), in that order."""
        return PoseImages(**{f.name: [getattr(self, f.name)[i] for i in index] if f.name == "paths"
                             else getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    @staticmethod
    def concat(parts: Sequence["PoseImages"]) -> "PoseImages":
        """The rows of ``parts``, one after the other."""
        return PoseImages(**{f.name: [x for d in parts for x in d.paths] if f.name == "paths"
                             else np.concatenate([getattr(d, f.name) for d in parts])
                             for f in dataclasses.fields(PoseImages)})


def collect_pose_images(dataset_chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]],
                        keypoint_chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]],
                        size_hw: tuple[int, int], score_threshold: float, split: str = "train",
                        where: str = "train-posegan") -> PoseImages:
    """Decode the ``split`` images of an ingest output (resized to ``size_hw``) with their
    ``extract-pose`` keypoints (one keypoint chunk per ingest chunk, same rows)."""
    import cv2

    from reidaug.data.images import decode_stored

    h, w = size_hw
    pose_chunks = [pa for pa, _ in keypoint_chunks]  # keypoints only: small
    images, kps, paths, pids, cams, recs = [], [], [], [], [], []
    for c, (arrays, _) in enumerate(dataset_chunks):
        n = len(arrays.get("path", []))
        pa = pose_chunks[c] if c < len(pose_chunks) else {}
        if list(pa.get("path", [])) != list(arrays.get("path", [])):
            raise DataError(f"{where}: keypoints chunk {c} does not list the images of dataset chunk {c}; "
                            "extract-pose must read the same ingest output. Fix: bind both to one ingest stage.")
        for i in range(n):
            if arrays["split"][i] != split:
                continue
            img = decode_stored(arrays["image"][i])
            images.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))
            kps.append(rescale_keypoints(pa["keypoints"][i], (img.shape[0], img.shape[1]), (h, w)))
            paths.append(str(arrays["path"][i]))
            pids.append(int(arrays["pid"][i]))
            cams.append(int(arrays["camid"][i]))
            recs.append(int(arrays["record_index"][i]))
    kp = np.stack(kps) if kps else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
    return PoseImages(
        images=np.stack(images) if images else np.zeros((0, h, w, 3), np.uint8),
        keypoints=clean_keypoints(kp, score_threshold), confident=count_confident(kp, score_threshold),
        paths=paths, pids=np.asarray(pids, np.int64), camids=np.asarray(cams, np.int64),
        records=np.asarray(recs, np.int64))


@dataclasses.dataclass(frozen=True)
class PairPlan:
    """Training pairs ``(condition index, target index)`` and how they were found."""

    pairs: np.ndarray  # (P, 2) int64 into PoseImages
    counts: dict[str, int]


def pose_change(kp_a: np.ndarray, kp_b: np.ndarray, height: float) -> np.ndarray:
    """Mean displacement of the keypoints present in both poses, in image heights: ``(N,)``;
    ``inf`` when they share no keypoint (they cannot be called the same pose)."""
    both = (kp_a[..., 2] > 0) & (kp_b[..., 2] > 0)  # (N, 17)
    d = np.linalg.norm(kp_a[..., :2] - kp_b[..., :2], axis=-1)  # (N, 17)
    n = both.sum(-1)
    mean = np.where(n > 0, (d * both).sum(-1) / np.maximum(n, 1), np.inf)
    return mean / float(height)


def make_pairs(data: PoseImages, min_keypoints: int, min_pose_change: float, height: int,
               max_pairs: int | None = None, seed: int = 0) -> PairPlan:
    """Every ordered pair ``(a, b)``, ``a != b``, of one identity where both poses have at least
    ``min_keypoints`` confident keypoints and differ by more than ``min_pose_change`` (mean
    keypoint displacement / ``height``); a seeded draw of ``max_pairs`` of them when set.

    Pairs are sorted (identity, condition, target) before the draw, so the plan depends on the
    data and the seed only.
    """
    usable = data.confident >= min_keypoints
    pairs: list[np.ndarray] = []
    same_pose = 0
    ids_with_pairs = 0
    ids = np.unique(data.pids[usable])
    for pid in ids:
        idx = np.flatnonzero(usable & (data.pids == pid))
        if len(idx) < 2:
            continue
        a, b = np.meshgrid(idx, idx, indexing="ij")
        a, b = a.ravel(), b.ravel()
        keep = a != b
        a, b = a[keep], b[keep]
        differ = pose_change(data.keypoints[a], data.keypoints[b], height) > min_pose_change
        same_pose += int((~differ).sum())
        if differ.any():
            ids_with_pairs += 1
            pairs.append(np.stack([a[differ], b[differ]], 1))
    allp = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    candidates = len(allp)
    if max_pairs is not None and candidates > max_pairs:
        pick = np.sort(np.random.default_rng([seed, 7]).choice(candidates, size=max_pairs, replace=False))
        allp = allp[pick]
    counts = {"images": len(data), "usable_poses": int(usable.sum()), "unusable_poses": int((~usable).sum()),
              "identities": int(len(np.unique(data.pids))), "identities_with_pairs": ids_with_pairs,
              "same_pose_pairs_left_out": same_pose, "candidate_pairs": candidates, "pairs": int(len(allp))}
    return PairPlan(allp.astype(np.int64), counts)


def pairs_document(data: PoseImages, plan: PairPlan, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``pairs.json``: the image table, the pairs as indices into it, the counts and the rule."""
    used = np.unique(plan.pairs.ravel()) if len(plan.pairs) else np.zeros(0, np.int64)
    remap = {int(i): j for j, i in enumerate(used)}
    return {"rule": dict(settings), "counts": plan.counts,
            "images": [{"path": data.paths[i], "record": int(data.records[i]), "pid": int(data.pids[i]),
                        "camid": int(data.camids[i]), "confident_keypoints": int(data.confident[i])} for i in used],
            "pairs": [[remap[int(a)], remap[int(b)]] for a, b in plan.pairs]}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What shapes training, beyond the model's own hyper-parameters."""

    iterations: int  # total steps (PG2: stage I + stage II)
    iterations_g1: int = 0  # PG2: stage-I steps (G1 alone); the rest train G2 and D
    train_batch: int = 8
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 50
    num_samples: int = 4  # rows of the sample grids


def build_config(model: str, hp: Mapping[str, Any], seed: int):
    """The model's config from the stage's hyper-parameters (None = the model's default).

    Raises :class:`ConfigError` (from the config's own checks) for a size or setting the model
    cannot take.
    """
    lr = hp.get("lr")
    if model == "pg2":
        from reidaug.models.pg2 import PG2Config

        kw = dict(image_height=hp["image_height"], image_width=hp["image_width"], ngf=hp.get("ngf"),
                  ndf=hp.get("ndf"), n_layers_d=hp.get("d_layers"), z_dim=hp.get("z_dim"),
                  lambda_l1=hp.get("lambda_l1"), lr_g1=lr, lr_g2=lr, lr_d=lr, seed=seed)
        return PG2Config(**{k: v for k, v in kw.items() if v is not None})
    if model == "deformable":
        from reidaug.models.deformable import DeformableGANConfig

        kw = dict(image_height=hp["image_height"], image_width=hp["image_width"], ngf=hp.get("ngf"),
                  ndf=hp.get("ndf"), n_layers_d=hp.get("d_layers"), nn_features=hp.get("nn_features"),
                  lambda_nn=hp.get("lambda_nn"), lr_g=lr, lr_d=lr, seed=seed)
        return DeformableGANConfig(**{k: v for k, v in kw.items() if v is not None})
    from reidaug.errors import unknown_name

    raise unknown_name("pose-guided model", model, MODELS)


def build_model(model: str, hp: Mapping[str, Any], seed: int):
    """A fresh PG2 / DeformableGAN (see :func:`build_config`)."""
    config = build_config(model, hp, seed)
    if model == "pg2":
        from reidaug.models.pg2 import PG2

        return PG2(config)
    from reidaug.models.deformable import DeformableGAN

    return DeformableGAN(config)


def model_step(model) -> int:
    return model.step_g1 + model.step_g2 if hasattr(model, "step_g1") else model.step


class PairBatch(NamedTuple):
    """The pairs of one step: condition and target images ``(B, H, W, 3)`` uint8 and their
    keypoints ``(B, 17, 3)`` in the model's frame."""

    cond: np.ndarray
    cond_kp: np.ndarray
    target: np.ndarray
    target_kp: np.ndarray


class _PairSampler:
    """The pairs of step ``t``: a pure function of ``(seed, t)``, so resume needs no RNG state."""

    def __init__(self, data: PoseImages, pairs: np.ndarray, settings: TrainSettings) -> None:
        self.data, self.pairs, self.s = data, pairs, settings

    def batch(self, t: int) -> PairBatch:
        rng = np.random.default_rng([self.s.seed, t])
        pick = self.pairs[rng.integers(0, len(self.pairs), self.s.train_batch)]
        a, b = pick[:, 0], pick[:, 1]
        d = self.data
        return PairBatch(d.images[a], d.keypoints[a], d.images[b], d.keypoints[b])


@dataclasses.dataclass
class TrainOutcome:
    model: str
    steps: int
    resumed_from: int | None
    seconds: float
    pairs_per_s: float
    last_losses: dict[str, float]
    generator_file: Path
    checksum: str


def train_model(model_name: str, data: PoseImages, pairs: np.ndarray, hp: Mapping[str, Any],
                settings: TrainSettings, run_dir: Path, generator_file: Path,
                device: "torch.device", amp: bool = False, score_threshold: float = 0.0,  # noqa: F821
                should_stop: Callable[[int], bool] | None = None) -> TrainOutcome:
    """Train a ``model_name`` generator on ``pairs`` of ``data`` for ``settings.iterations``
    steps in ``run_dir`` (resuming from its checkpoint; :func:`reidaug.gen.loop.train_loop`),
    then write the generator weights to ``generator_file`` atomically.

    ``data`` holds the images at the model's size with keypoints in that frame.
    ``should_stop(step)`` (tests) stops right after the checkpoint of that step, as a kill would.
    PG2 runs two phases: G1 alone up to ``iterations_g1``, then G2 and D.
    """
    where = f"train-posegan {model_name}"
    if len(pairs) == 0:
        raise DataError(f"{where}: no training pairs. Fix: see the pair counts in pairs.json.")
    model = build_model(model_name, hp, settings.seed)
    sampler = _PairSampler(data, pairs, settings)
    fixed = pairs[np.unique(np.linspace(0, len(pairs) - 1, settings.num_samples).round().astype(np.int64))]

    def to_dev(arr: np.ndarray) -> "torch.Tensor":  # noqa: F821
        return images_to_device(arr, device)

    def pg2_step(step_fn):
        def run(batch: PairBatch) -> dict[str, float]:
            c, g = to_dev(batch.cond), to_dev(batch.target)
            hm, mask = model.pose_maps(batch.target_kp)  # (B, 17, H, W), (B, 1, H, W) on the device
            with autocast(device, amp):
                return step_fn(c, g, hm, mask)
        return run

    def deformable_step(batch: PairBatch) -> dict[str, float]:
        c, g = to_dev(batch.cond), to_dev(batch.target)
        with autocast(device, amp):
            return model.training_step(c, g, batch.cond_kp, batch.target_kp)

    steps = ([Phase("G1", settings.iterations_g1, pg2_step(model.training_step_g1)),
              Phase("G2", settings.iterations, pg2_step(model.training_step_g2))]
             if model_name == "pg2" else deformable_step)
    out = train_loop(model, iterations=settings.iterations, batch_for=sampler.batch, train_step=steps,
                     run_dir=run_dir, cadence=settings, device=device, where=where,
                     checkpoint_extra={"model_name": model_name}, step_of=model_step,
                     sample=lambda png: _sample_grid(model, model_name, data, fixed, png, to_dev),
                     should_stop=should_stop)
    checksum = save_generator(generator_file, generator_state(model, model_name, score_threshold))
    return TrainOutcome(model=model_name, steps=out.steps, resumed_from=out.resumed_from, seconds=out.seconds,
                        pairs_per_s=out.steps_run * settings.train_batch / max(out.seconds, 1e-9),
                        last_losses=out.last_losses, generator_file=generator_file, checksum=checksum)


def generator_state(model, model_name: str, score_threshold: float) -> dict[str, Any]:
    """What inference needs: the generator weights (CPU), the model config and the keypoint
    threshold training used."""
    return {"model": model_name, "config": dataclasses.asdict(model.config), "weights": generator_weights(model),
            "step": model_step(model), "score_threshold": float(score_threshold)}


def pose_picture(kp: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A target pose as a skeleton on black, ``(H, W, 3)`` uint8."""
    from reidaug.pose.skeleton import draw_skeleton

    return draw_skeleton(np.zeros((hw[0], hw[1], 3), np.uint8), kp, thickness=max(1, hw[0] // 64),
                         radius=max(1, hw[0] // 48))


def _sample_grid(model, model_name: str, data: PoseImages, fixed: np.ndarray, out: Path, to_dev) -> None:
    """Rows: fixed pairs; columns: condition, target pose, G1 and G2 (PG2) or generated, ground truth."""
    import torch

    from reidaug.models.gan_common import tensor_to_images

    a, b = fixed[:, 0], fixed[:, 1]
    hw = data.images.shape[1:3]
    cond = to_dev(data.images[a])
    with torch.no_grad():
        if model_name == "pg2":
            hm, _ = model.pose_maps(data.keypoints[b])
            g1, g2 = model.generate(cond, hm)
            outs = [tensor_to_images(g1.float()), tensor_to_images(g2.float())]
            cols = ["condition", "target pose", "G1", "G2", "real"]
        else:
            outs = [tensor_to_images(model.generate(cond, data.keypoints[a], data.keypoints[b]).float())]
            cols = ["condition", "target pose", "generated", "real"]
    rows, labels = [], []
    for r, (i, j) in enumerate(zip(a, b)):
        rows.append([data.images[i], pose_picture(data.keypoints[j], hw)] + [o[r] for o in outs] + [data.images[j]])
        labels.append(f"id {int(data.pids[i])}")
    image_grid(rows, out, row_labels=labels, col_labels=cols)


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------
class PoseGuidedGenerator:
    """The generator of a ``train-posegan`` output (``models/<model>.pt``), ready for batches.

    :meth:`generate` takes RGB uint8 condition images at the model's size, their keypoints and
    the target keypoints (both in the model's frame) and returns the generated images, uint8
    ``(B, H, W, 3)`` (PG2: G2's output, or G1's with ``stage="g1"``). On CUDA: bf16 autocast
    (``amp``) and channels_last. Keypoints at or below the training score threshold count as
    missing, as they did in training.
    """

    @classmethod
    def from_folder(cls, folder: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                    where: str = "input models", cpu_bf16: bool = False) -> "PoseGuidedGenerator":
        """The generator of a ``train-posegan`` models folder, which holds exactly one ``*.pt``."""
        files = sorted(Path(folder).glob("*.pt"))
        if len(files) != 1:
            raise DataError(f"expected one generator file (*.pt) in {folder}, found "
                            f"{[f.name for f in files] or 'none'}. Fix: bind models to a train-posegan output "
                            "(models: train-posegan.models).")
        return cls(files[0], device, amp=amp, where=where, cpu_bf16=cpu_bf16)

    def __init__(self, model_file: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                 where: str = "generate-poseguided", cpu_bf16: bool = False) -> None:
        self.device, self.amp, self.where, self.cpu_bf16 = device, amp, where, cpu_bf16
        self.file = Path(model_file)
        state = load_torch(self.file, where)
        if state.get("model") not in MODELS or "weights" not in state:
            raise DataError(f"{where}: {self.file} is not a train-posegan generator file (model = "
                            f"{state.get('model')!r}). Fix: bind models to a train-posegan output.")
        self.model_name: str = state["model"]
        self.checksum: str = state["checksum"]
        self.score_threshold = float(state.get("score_threshold", 0.0))
        cfg = dict(state["config"])
        if self.model_name == "pg2":
            from reidaug.models.pg2 import PG2, PG2Config

            self.model = PG2(PG2Config(**cfg))
        else:
            from reidaug.models.deformable import DeformableGAN, DeformableGANConfig

            cfg["nn_features"] = "pixels"  # the loss's feature net is not needed to generate
            self.model = DeformableGAN(DeformableGANConfig(**cfg))
        load_generator(self.model, state, self.file, device, where, "train-posegan")
        self.size: tuple[int, int] = (int(cfg["image_height"]), int(cfg["image_width"]))

    def to_tensor(self, images: np.ndarray) -> "torch.Tensor":  # noqa: F821
        return images_to_device(images, self.device)

    def generate_tensor(self, x: "torch.Tensor", cond_kp: np.ndarray, target_kp: np.ndarray,  # noqa: F821
                        stage: str = "final", threshold: float | None = None) -> "torch.Tensor":  # noqa: F821
        """``x`` float ``(B, 3, H, W)`` in [-1, 1] on the device, keypoints ``(B, 17, 3)`` in the
        model's frame → uint8 ``(B, H, W, 3)`` on the device. Keypoints at or below
        ``threshold`` (default: the training one) are missing: a caller that picks, counts or
        records poses at its own threshold passes it, so the generator draws those very poses."""
        import torch

        threshold = self.score_threshold if threshold is None else float(threshold)
        cond_kp = clean_keypoints(cond_kp, threshold)
        target_kp = clean_keypoints(target_kp, threshold)
        with torch.inference_mode(), inference_autocast(self.device, self.amp, self.cpu_bf16):
            if self.model_name == "pg2":
                hm, _ = self.model.pose_maps(target_kp)
                g1, g2 = self.model.generate(x, hm)
                y = g1 if stage == "g1" else g2
            else:
                y = self.model.generate(x, cond_kp, target_kp)
            return to_uint8_images(y)

    def generate(self, images: np.ndarray, cond_kp: np.ndarray, target_kp: np.ndarray,
                 stage: str = "final", threshold: float | None = None) -> np.ndarray:
        return self.generate_tensor(self.to_tensor(images), cond_kp, target_kp, stage, threshold).cpu().numpy()


def generate_fakes(model_file: str | Path, images: Sequence[np.ndarray], cond_keypoints: np.ndarray,
                   target_keypoints: np.ndarray, target_hw: Any, *, device: str = "auto",
                   batch_size: int = 16, amp: bool = True, stage: str = "final") -> np.ndarray:
    """The person of each condition image in its target pose, from a ``models/*.pt`` file.

    ``images``: N RGB uint8 arrays of any sizes; ``cond_keypoints`` ``(N, 17, 3)`` in each
    image's own pixels; ``target_keypoints`` ``(N, 17, 3)`` in pixels of ``target_hw`` (one
    ``(h, w)`` for all, or ``(N, 2)``: e.g. the target image's size, or a canonical-pose frame).
    Returns ``(N, H, W, 3)`` uint8 at the model's size (PG2: G2's output, ``stage="g1"`` for
    G1's). For metrics on held-out pairs: compare with the real target image resized to H x W.
    """
    import cv2

    from reidaug.gen.common import pick_device

    gen = PoseGuidedGenerator(Path(model_file), pick_device(device, "generate_fakes"), amp=amp,
                              where="generate_fakes")
    h, w = gen.size
    n = len(images)
    cond_kp = np.asarray(cond_keypoints, np.float32).reshape(n, NUM_KEYPOINTS, 3)
    tgt_kp = np.asarray(target_keypoints, np.float32).reshape(n, NUM_KEYPOINTS, 3)
    out = np.zeros((n, h, w, 3), np.uint8)
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        batch = [images[i] for i in range(sl.start, sl.stop)]
        src_hw = np.array([im.shape[:2] for im in batch])
        x = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in batch])
        thw = np.asarray(target_hw).reshape(-1, 2)
        thw = thw if len(thw) == 1 else thw[sl]
        out[sl] = gen.generate(x, rescale_keypoints(cond_kp[sl], src_hw, (h, w)),
                               rescale_keypoints(tgt_kp[sl], thw, (h, w)), stage)
    return out


def size_problem(model: str, height: int, width: int, d_layers: int | None) -> str | None:
    """Why ``model`` cannot be built at ``height x width`` (the configs' size rules, checked
    without importing torch so that a YAML is checked as it loads), or None. PG2's fully
    connected bottleneck fixes the size at training: a trained model generates at that size
    only, and inputs are resized to it."""
    import math

    if model == "pg2":
        if height < 8 or width < 4:
            return "PG2 needs at least 8 x 4"
        blocks = int(math.log2(height)) - 2  # G1 levels (8 x 4 bottleneck at 128 x 64)
        if blocks < 2:
            return "PG2's G1 needs at least 2 levels, i.e. height >= 16"
        layers = d_layers if d_layers is not None else max(1, int(math.log2(height / 8)))
        for name, halvings in (("G1's encoder", blocks - 1), ("the pair discriminator", layers)):
            scale = 2 ** halvings
            if height % scale or width % scale:
                return (f"{name} halves the image {halvings} times at height {height}, so height and width "
                        f"must be multiples of {scale}")
        return None
    if model == "deformable":
        down = int(math.log2(height)) - 2 if height >= 8 else 0
        if down < 3:
            return ("Deformable GAN's deformable skips at its 4 finest levels need log2(height) - 2 >= 3 "
                    "downsamplings, i.e. height >= 32")
        scale = 2 ** down
        if down < 1 or height % scale or width % scale or (height // scale) * (width // scale) < 2:
            return (f"the Deformable GAN generator halves the image {down} times at height {height}, so height "
                    f"and width must be multiples of {scale} with at least 2 cells left")
        layers = d_layers if d_layers is not None else 3
        if min(height, width) < 3 * 2 ** layers:
            fits = max(1, (min(height, width) // 3).bit_length() - 1)
            return (f"its PatchGAN discriminator with d_layers={layers} needs both sides >= 3 * 2^{layers} = "
                    f"{3 * 2 ** layers} (d_layers: {fits} fits this size)")
        return None
    return f"unknown model {model!r}"
