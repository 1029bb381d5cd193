"""CamStyle (Zhong et al., CVPR 2018): train camera-style generators, translate images.

CamStyle trains one CycleGAN per pair of cameras of the training set, with the identity-mapping
loss on, then renders every training image in the style of each other camera; the fakes keep
their identity. ``model="stargan"`` trains one StarGAN over all cameras instead (one model for
L cameras instead of L(L-1)/2).

Training (:func:`train_model`) is resumable: the whole state (networks, optimisers, schedulers,
image pools, step) is checkpointed atomically every ``checkpoint_every`` steps, and the images
of step ``t`` (indices, crop offsets, flips) are a function of ``(seed, t)`` only, so a killed
run resumed from its last checkpoint continues exactly as an uninterrupted run would have (on
the CPU, bit-identically). The learning rate is constant for the first ``decay_start`` fraction
of the steps and then decays linearly to ~0, as CycleGAN's ``linear`` policy does over epochs.

Inference (:class:`CamStyleTranslator`) loads the generator files that training writes and
translates batches of one (source camera, target camera) pair.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from reidaug.errors import DataError
from reidaug.data.images import image_grid
from reidaug.gen.common import autocast, images_to_device, inference_autocast, to_uint8_images, to_device
from reidaug.gen.loop import generator_weights, save_generator, train_loop
from reidaug.io.checkpoint import load_torch

MODELS = ("cyclegan", "stargan")
# route ends of a dataset-to-dataset model (domains: datasets) in CamStyleTranslator: not cameras
SOURCE_DATASET, TARGET_DATASET = -1, -2
SCHEDULE_UNITS = 100  # the LR schedule runs over this many "epochs" of iterations / 100 steps


@dataclasses.dataclass(frozen=True)
class ModelJob:
    """One model to train: a CycleGAN for a camera pair, or one StarGAN for all cameras."""

    model: str
    cameras: tuple[int, ...]  # (a, b) for a CycleGAN (A = camera a); all cameras for StarGAN; (0, 1) for datasets
    domains: str = "cameras"  # "datasets": domain 0 = the source dataset's train images, 1 = the target's

    @property
    def name(self) -> str:
        if self.domains == "datasets":
            return f"{self.model}_source-target"
        return f"{self.model}_c" + "-c".join(str(c) for c in self.cameras)

    def domain_name(self, d: int) -> str:
        """How the sample grids and logs name domain ``d``: ``c3`` (a camera) or ``source`` / ``target``."""
        return ("source", "target")[self.cameras.index(d)] if self.domains == "datasets" else f"c{d}"


def plan_jobs(model: str, cameras: Sequence[int], domains: str = "cameras") -> list[ModelJob]:
    if domains == "datasets":  # one CycleGAN between the two datasets
        return [ModelJob(model, (0, 1), "datasets")]
    cams = sorted(set(int(c) for c in cameras))
    if model == "cyclegan":
        return [ModelJob("cyclegan", (a, b)) for i, a in enumerate(cams) for b in cams[i + 1:]]
    return [ModelJob("stargan", tuple(cams))]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What shapes training, beyond the model's own hyper-parameters."""

    iterations: int
    train_batch: int = 1
    decay_start: float = 0.5
    flip: bool = True
    jitter: float = 1.12  # load at jitter x size, random-crop to size (CycleGAN: 286 -> 256)
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 500
    log_every: int = 50
    num_samples: int = 4  # per camera, in the sample grids


def load_size(height: int, width: int, jitter: float) -> tuple[int, int]:
    return max(height, int(round(height * jitter))), max(width, int(round(width * jitter)))


def collect_train_images(chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]], cameras: Sequence[int] | None,
                         size_hw: tuple[int, int], split: str = "train",
                         keypoint_chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]] | None = None,
                         score_threshold: float = 0.3) -> dict[int, np.ndarray]:
    """Decode the ``split`` images of an ingest output, resized to ``size_hw``, by camera.

    Returns ``{camid: (N_c, H, W, 3) uint8}`` in ingest order, for the cameras asked for (all
    cameras of the split when ``cameras`` is None). With ``keypoint_chunks`` (extract-pose's output
    of the same ingest, one chunk per chunk) each image gets a 4th channel: its person mask (PG2's
    :func:`~reidaug.pose.representations.body_mask` of the keypoints above ``score_threshold``,
    255 on the body; all 0 where no keypoint is confident), ``(N_c, H, W, 4)``.
    """
    import cv2

    from reidaug.data.images import decode_stored
    from reidaug.pose.representations import body_mask

    h, w = size_hw
    by_cam: dict[int, list[np.ndarray]] = {}
    kp_iter = iter(keypoint_chunks) if keypoint_chunks is not None else None
    for c, (arrays, _) in enumerate(chunks):
        kps = None
        if kp_iter is not None:
            kp_arrays, _ = next(kp_iter, (None, None))
            if kp_arrays is None or list(kp_arrays["path"]) != list(arrays.get("path", [])):
                raise DataError(f"keypoints chunk {c} does not list the images of dataset chunk {c}; "
                                "extract-pose must read the same ingest output as train-camstyle (check its inputs)")
            kps = kp_arrays["keypoints"]
        if "image" not in arrays:
            continue
        for i, s in enumerate(arrays["split"]):
            cam = int(arrays["camid"][i])
            if s != split or (cameras is not None and cam not in cameras):
                continue
            rgb = decode_stored(arrays["image"][i])
            img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
            if kps is not None:
                mask = np.asarray(body_mask(kps[i], (h, w), rgb.shape[:2], threshold=score_threshold))
                img = np.concatenate([img, (mask * 255).astype(np.uint8)[..., None]], axis=2)
            by_cam.setdefault(cam, []).append(img)
    return {c: np.stack(v) for c, v in sorted(by_cam.items())}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def build_model(job: ModelJob, hp: Mapping[str, Any], settings: TrainSettings):
    """A fresh CycleGAN / StarGAN for ``job`` from the stage's hyper-parameters ``hp``."""
    from reidaug.models.cyclegan import CycleGAN, CycleGANConfig
    from reidaug.models.stargan import StarGAN, StarGANConfig

    units_const = int(round(SCHEDULE_UNITS * settings.decay_start))
    common = dict(image_height=hp["image_height"], image_width=hp["image_width"], seed=settings.seed,
                  n_epochs=units_const, n_epochs_decay=SCHEDULE_UNITS - units_const)
    if job.model == "cyclegan":
        return CycleGAN(CycleGANConfig(
            ngf=hp["ngf"], ndf=hp["ndf"], n_blocks=hp["n_blocks"], n_layers_d=hp["d_layers"] or 3,
            lambda_cycle=hp["lambda_cycle"], lambda_identity=hp["lambda_identity"], lr=hp["lr"],
            pool_size=hp["pool_size"], residual=hp.get("residual", False),
            lambda_foreground=hp.get("lambda_foreground", 0.0), lambda_feature=hp.get("lambda_feature", 0.0),
            lambda_similarity=hp.get("lambda_similarity", 0.0), similarity_margin=hp.get("similarity_margin", 2.0),
            **common))
    return StarGAN(StarGANConfig(
        num_domains=len(job.cameras), g_conv_dim=hp["ngf"], d_conv_dim=hp["ndf"], g_repeat_num=hp["n_blocks"],
        d_repeat_num=hp["d_layers"] or stargan_d_layers(hp["image_height"], hp["image_width"]),
        lambda_rec=hp["lambda_cycle"], lr_g=hp["lr"] / 2, lr_d=hp["lr"] / 2, **common))


def stargan_d_layers(height: int, width: int) -> int:
    """The deepest StarGAN discriminator (<= 6, the paper's) the image size allows."""
    r = 6
    while r > 1 and (height % 2 ** r or width % 2 ** r or min(height, width) // 2 ** r < 1):
        r -= 1
    return r


class _Sampler:
    """The images of step ``t``: a pure function of ``(seed, t)``, so resume needs no RNG state."""

    def __init__(self, images: Mapping[int, np.ndarray], size_hw: tuple[int, int], settings: TrainSettings) -> None:
        self.images, self.size, self.s = images, size_hw, settings

    def _crop(self, rng: np.random.Generator, batch: np.ndarray) -> np.ndarray:
        h, w = self.size
        out = np.empty((len(batch), h, w, batch.shape[3]), np.uint8)  # RGB, or RGB + person mask
        for i, img in enumerate(batch):
            y = int(rng.integers(0, img.shape[0] - h + 1))
            x = int(rng.integers(0, img.shape[1] - w + 1))
            crop = img[y:y + h, x:x + w]
            if self.s.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i] = crop
        return out

    def pair(self, t: int, cam_a: int, cam_b: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.s.seed, t])
        a, b = self.images[cam_a], self.images[cam_b]
        ia = rng.integers(0, len(a), self.s.train_batch)
        ib = rng.integers(0, len(b), self.s.train_batch)
        return self._crop(rng, a[ia]), self._crop(rng, b[ib])

    def multi(self, t: int, cameras: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.s.seed, t])
        sizes = np.array([len(self.images[c]) for c in cameras])
        flat = rng.integers(0, int(sizes.sum()), self.s.train_batch)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        dom = np.searchsorted(starts, flat, side="right") - 1  # domain index = position in cameras
        batch = np.stack([self.images[cameras[d]][f - starts[d]] for d, f in zip(dom, flat)])
        return self._crop(rng, batch), dom.astype(np.int64)


def _center(images: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    y, x = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
    return images[:, y:y + h, x:x + w]


@dataclasses.dataclass
class TrainOutcome:
    job: ModelJob
    steps: int
    resumed_from: int | None
    seconds: float
    images_per_s: float
    last_losses: dict[str, float]
    generator_file: Path
    checksum: str


def reid_feature_net(model_path: Path | str, device: "torch.device"):  # noqa: F821
    """A frozen re-ID model (``reidaug train``'s model.pt or run folder) as a feature extractor for
    CycleGAN's ``lambda_feature``: images ``(B, 3, H, W)`` in [-1, 1] -> its test feature ``(B, D)``
    (eval mode: BN running statistics, the BN-neck feature where it has one), resized to the size it
    was trained at and ImageNet-normalised as the trainer feeds it. Gradients reach the images, not
    its weights. The images are stretched to that size, as the CycleGAN's are: a model trained on an
    aspect-preserving (``resize: pad``) export would see them in another geometry."""
    import torch

    from reidaug.data.torchdata import IMAGENET_MEAN, IMAGENET_STD
    from reidaug.train.model import load_model

    reid = load_model(model_path).to(device).eval()
    for q in reid.parameters():
        q.requires_grad_(False)
    size = tuple(int(v) for v in reid.config.input_size)  # (H, W) it was trained at
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def features(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return reid(((x + 1) / 2 - mean) / std)

    features.model = reid  # type: ignore[attr-defined]
    features.num_classes = reid.config.num_classes  # type: ignore[attr-defined]
    return features


def train_model(job: ModelJob, images: Mapping[int, np.ndarray], hp: Mapping[str, Any], settings: TrainSettings,
                run_dir: Path, generator_file: Path, device: "torch.device", amp: bool = False,  # noqa: F821
                should_stop: Callable[[int], bool] | None = None,
                feature_net: Callable[[Any], Any] | None = None) -> TrainOutcome:
    """Train ``job`` for ``settings.iterations`` steps in ``run_dir`` (resuming from its
    checkpoint; :func:`reidaug.gen.loop.train_loop`), then write the generator weights to
    ``generator_file`` atomically.

    ``images`` holds each camera's train images at the load size (``jitter`` x the model size).
    ``should_stop(step)`` (tests) stops right after the checkpoint of that step, as a kill would.
    ``feature_net`` (:func:`reid_feature_net`): the frozen re-ID model of ``lambda_feature``.
    """
    import torch

    size = (int(hp["image_height"]), int(hp["image_width"]))
    for c in job.cameras:
        if c not in images or len(images[c]) == 0:
            raise DataError(f"train-camstyle: {job.domain_name(c)} has no train images; a {job.model} for cameras "
                            f"{list(job.cameras)} cannot be trained. Fix: list only cameras with train images "
                            f"(found: {sorted(images)}) in `cameras`.")
    model = build_model(job, hp, settings)
    if feature_net is not None:
        model.feature_net = feature_net
    sampler = _Sampler(images, size, settings)
    # spread over each camera's images (ordered by identity): one person per row, not one person's shots
    fixed = {c: _center(images[c][np.unique(np.linspace(0, len(images[c]) - 1, settings.num_samples).astype(int))],
                        size)[..., :3]
             for c in job.cameras}
    per_unit = settings.iterations / SCHEDULE_UNITS

    def to_dev(arr: np.ndarray) -> torch.Tensor:
        return images_to_device(arr, device)

    def catch_up(step: int) -> None:  # linear-decay schedule: one scheduler "epoch" every iterations/100 steps
        while int(step / per_unit + 1e-9) > int(model.schedulers[0].last_epoch):
            model.step_schedulers()

    def batch_for(t: int):
        return sampler.pair(t, *job.cameras) if job.model == "cyclegan" else sampler.multi(t, job.cameras)

    def masks(arr: np.ndarray) -> torch.Tensor | None:  # (B, 1, H, W) in [0, 1] from the 4th channel
        if arr.shape[3] < 4:
            return None
        return torch.from_numpy(np.ascontiguousarray(arr[..., 3])).to(device)[:, None].float() / 255.0

    def train_step(batch) -> dict[str, float]:
        with autocast(device, amp):
            if job.model == "cyclegan":
                a, b = batch
                rgb_a, rgb_b = np.ascontiguousarray(a[..., :3]), np.ascontiguousarray(b[..., :3])
                return model.training_step(to_dev(rgb_a), to_dev(rgb_b), mask_a=masks(a), mask_b=masks(b))
            return model.training_step(to_dev(batch[0]), torch.from_numpy(batch[1]).to(device))

    out = train_loop(model, iterations=settings.iterations, batch_for=batch_for, train_step=train_step,
                     run_dir=run_dir, cadence=settings, device=device, where=f"train-camstyle {job.name}",
                     checkpoint_extra={"job": dataclasses.asdict(job)}, catch_up=catch_up,
                     log_extra=lambda step: {"lr": float(model.optimizer_G.param_groups[0]["lr"])},
                     sample=lambda png: _sample_grid(model, job, fixed, png, to_dev), should_stop=should_stop)
    checksum = save_generator(generator_file, generator_state(model, job))
    per_step = settings.train_batch * (2 if job.model == "cyclegan" else 1)
    return TrainOutcome(job=job, steps=out.steps, resumed_from=out.resumed_from, seconds=out.seconds,
                        images_per_s=out.steps_run * per_step / max(out.seconds, 1e-9), last_losses=out.last_losses,
                        generator_file=generator_file, checksum=checksum)


def generator_state(model, job: ModelJob) -> dict[str, Any]:
    """What inference needs: the generator weights (on the CPU) and the model config."""
    return {"model": job.model, "cameras": list(job.cameras), "domains": job.domains,
            "config": dataclasses.asdict(model.config), "weights": generator_weights(model), "step": model.step}


def _sample_grid(model, job: ModelJob, fixed: Mapping[int, np.ndarray], out: Path, to_dev) -> None:
    """Rows: the fixed samples of each camera; columns: real, then the fake for each other camera."""
    import torch

    from reidaug.models.gan_common import tensor_to_images

    rows, labels = [], []
    cams = list(job.cameras)
    with torch.no_grad():
        for c in cams:
            x = to_dev(fixed[c])
            fakes = {}
            for t in cams:
                if t == c:
                    continue
                if job.model == "cyclegan":
                    y = model.translate(x, "AB" if c == cams[0] else "BA")
                else:
                    y = model.translate(x, cams.index(t))
                fakes[t] = tensor_to_images(y.float())
            others = [t for t in cams if t != c]
            for i in range(len(fixed[c])):
                rows.append([fixed[c][i]] + [fakes[t][i] for t in others])
                labels.append(f"{job.domain_name(c)}#{i} -> {','.join(job.domain_name(t) for t in others)}")
    ncols = max(len(r) for r in rows)
    image_grid(rows, out, row_labels=labels, col_labels=["real"] + [f"fake {j}" for j in range(1, ncols)])


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------
class CamStyleTranslator:
    """The generators of a ``train-camstyle`` output folder, ready to translate batches.

    ``translate(images, source_cam, target_cam)`` takes RGB uint8 ``(B, H, W, 3)`` at the
    model's size and returns the same shape. On CUDA: bf16 autocast (``amp``) and channels_last.
    """

    def __init__(self, models_dir: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                 cpu_bf16: bool = False) -> None:
        self.device, self.amp, self.cpu_bf16 = device, amp, cpu_bf16
        files = sorted(Path(models_dir).glob("*.pt"))
        if not files:
            raise DataError(f"generate-camstyle: no generator files (*.pt) in {models_dir}; bind models to a "
                            "train-camstyle output (models: train-camstyle.models).")
        # (src, tgt) -> (net, domain, checksum, name)
        self.routes: dict[tuple[int, int], tuple[Any, Any, str, str]] = {}
        self.size: tuple[int, int] | None = None
        self.domains: str | None = None  # "cameras" (CamStyle) or "datasets" (PTGAN / SPGAN), one per folder
        for f in files:
            state = load_torch(f, "generate-camstyle")
            domains = state.get("domains", "cameras")  # files written before dataset transfer: cameras
            if self.domains is not None and domains != self.domains:
                raise DataError(f"generate-camstyle: {models_dir} mixes camera-style and dataset-to-dataset "
                                "generators; one train-camstyle stage writes one kind. Fix: bind models to one stage.")
            self.domains = domains
            net_by_name, cams = self._build(state), [int(c) for c in state["cameras"]]
            size = (int(state["config"]["image_height"]), int(state["config"]["image_width"]))
            if self.size is not None and size != self.size:
                raise DataError(f"generate-camstyle: generators in {models_dir} were trained at different sizes "
                                f"({self.size} and {size}); train them in one train-camstyle stage.")
            self.size = size
            for net in net_by_name.values():
                to_device(net, device)
                net.eval()
            if domains == "datasets":  # G_AB: source dataset -> target's style
                self.routes[(SOURCE_DATASET, TARGET_DATASET)] = (net_by_name["G_AB"], None, state["checksum"], f.stem)
                self.routes[(TARGET_DATASET, SOURCE_DATASET)] = (net_by_name["G_BA"], None, state["checksum"], f.stem)
            elif state["model"] == "cyclegan":
                a, b = cams
                self.routes[(a, b)] = (net_by_name["G_AB"], None, state["checksum"], f.stem)
                self.routes[(b, a)] = (net_by_name["G_BA"], None, state["checksum"], f.stem)
            else:
                for s in cams:
                    for t in cams:
                        if s != t:
                            self.routes[(s, t)] = (net_by_name["G"], cams.index(t), state["checksum"], f.stem)
                self.num_domains = len(cams)

    @staticmethod
    def _build(state: dict[str, Any]) -> dict[str, Any]:
        from reidaug.models.cyclegan import ResnetGenerator
        from reidaug.models.stargan import StarGANGenerator

        cfg, weights = state["config"], state["weights"]
        nets: dict[str, Any] = {}
        if state["model"] == "cyclegan":
            for name in ("G_AB", "G_BA"):
                nets[name] = ResnetGenerator(3, 3, cfg["ngf"], cfg["n_blocks"], cfg["norm"], cfg["padding"],
                                             residual=cfg.get("residual", False))  # older files: no field
        else:
            nets["G"] = StarGANGenerator(cfg["num_domains"], cfg["g_conv_dim"], cfg["g_repeat_num"])
        for name, net in nets.items():
            sub = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
            net.load_state_dict(sub)
        return nets

    @property
    def cameras(self) -> list[int]:
        """The cameras the generators translate between (none for a dataset-to-dataset model)."""
        return sorted(c for c in {s for s, _ in self.routes} | {t for _, t in self.routes} if c >= 0)

    def checksum(self, source_cam: int, target_cam: int) -> str:
        return self.routes[(source_cam, target_cam)][2]

    def has_route(self, source_cam: int, target_cam: int) -> bool:
        return (source_cam, target_cam) in self.routes

    def to_tensor(self, images: np.ndarray) -> "torch.Tensor":  # noqa: F821
        return images_to_device(images, self.device)

    def translate_tensor(self, x: "torch.Tensor", source_cam: int, target_cam: int) -> "torch.Tensor":  # noqa: F821
        """Float ``(B, 3, H, W)`` in [-1, 1] on the device → uint8 ``(B, H, W, 3)`` on the device."""
        import torch

        net, domain, _, _ = self.routes[(source_cam, target_cam)]
        with torch.inference_mode(), inference_autocast(self.device, self.amp, self.cpu_bf16):
            if domain is None:
                y = net(x)
            else:
                c = torch.nn.functional.one_hot(torch.full((x.shape[0],), domain, dtype=torch.long,
                                                           device=x.device), self.num_domains).float()
                y = net(x, c)
            return to_uint8_images(y)

    def translate(self, images: np.ndarray, source_cam: int, target_cam: int) -> np.ndarray:
        return self.translate_tensor(self.to_tensor(images), source_cam, target_cam).cpu().numpy()
