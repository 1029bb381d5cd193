"""ReidH5Dataset, re-ID transforms and the PK / real-fake batch samplers."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from reidaug.data.h5format import H5Writer, make_targets
from reidaug.data.torchdata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize255,
    PKSampler,
    RealFakeSampler,
    ReidBatch,
    ReidH5Dataset,
    ResizeIfNeeded,
    build_transforms,
    normalize_batch,
    reid_collate,
)
from reidaug.errors import ConfigError, DataError


def _write(path: Path, n_ids: int = 6, per_id: int = 3, fakes_per_id: int = 2, **writer: object) -> None:
    """n_ids identities x per_id real images over 2 cameras, plus LSR camstyle fakes.

    ``writer`` goes to H5Writer (encoding, compression); jpeg/png files keep native sizes,
    which vary per image (so the reader has to resize them to batch them).
    """
    rng = np.random.default_rng(0)
    h, w = 32, 16
    native = writer.get("encoding", "raw") != "raw"
    with H5Writer(path, image_size=None if native else (h, w), **writer) as wr:
        for i in range(n_ids):
            imgs = rng.integers(0, 256, (per_id, h, w, 3), dtype=np.uint8)
            if native:
                imgs = [rng.integers(0, 256, (h + 2 * j, w + j, 3), dtype=np.uint8) for j in range(per_id)]
            wr.append("train", images=imgs, pid=100 + i, camid=[j % 2 for j in range(per_id)], label=i)
        row = 0
        for i in range(n_ids):
            imgs = rng.integers(0, 256, (fakes_per_id, h, w, 3), dtype=np.uint8)
            idx, val = make_targets("lsr", [i] * fakes_per_id, n_ids, epsilon=0.1)
            wr.append("train", images=imgs, pid=100 + i, camid=1, label=i, source="camstyle",
                      origin=row, label_scheme="lsr", target_index=idx, target_value=val)
            row += per_id
        wr.append("query", images=rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8), pid=[100, 101], camid=0)


@pytest.fixture()
def h5_path(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.h5"
    _write(p)
    return p


def test_dataset_items(h5_path: Path) -> None:
    ds = ReidH5Dataset(h5_path, "train", transform=build_transforms(64, 32, train=True, random_erasing=True))
    assert len(ds) == 6 * 3 + 6 * 2
    item = ds[0]
    assert item["img"].shape == (3, 64, 32) and item["img"].dtype == torch.float32
    assert item["target"].shape == (6,) and item["target"][0] == 1.0 and not item["is_fake"]
    fake = ds[18]
    assert fake["is_fake"] and fake["index"] == 18 and fake["pid"] == 100
    assert fake["target"].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert fake["target"][0].item() == pytest.approx(0.9 + 0.1 / 6, abs=1e-3)
    q = ReidH5Dataset(h5_path, "query")
    assert q[1]["target"].item() == -1 and q[1]["img"].dtype == torch.uint8


def test_sources_filter_keeps_split_indices(h5_path: Path) -> None:
    ds = ReidH5Dataset(h5_path, "train", sources=["camstyle"])
    assert len(ds) == 12 and ds.is_fake.all()
    assert ds[0]["index"] == 18
    with pytest.raises(KeyError, match="Known sources"):
        ReidH5Dataset(h5_path, "train", sources=["camstyel"])


def test_transforms_match_torchvision_normalisation() -> None:
    img = torch.randint(0, 256, (3, 256, 128), dtype=torch.uint8)
    ref = (img.float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(Normalize255()(img), ref, atol=1e-5, rtol=1e-5)
    test_t = build_transforms(256, 128, train=False)
    torch.testing.assert_close(test_t(img), ref, atol=1e-5, rtol=1e-5)
    small = torch.randint(0, 256, (3, 160, 60), dtype=torch.uint8)
    assert build_transforms(train=True)(small).shape == (3, 256, 128)


def test_pk_sampler_batches_are_p_ids_by_k(h5_path: Path) -> None:
    labels = np.repeat(np.arange(10), [1, 2, 4, 8, 4, 4, 4, 5, 6, 9])
    s = PKSampler(labels, p=4, k=4, seed=3)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        counts = Counter(labels[b].tolist())
        assert len(counts) == 4 and set(counts.values()) == {4}
    s2 = PKSampler(labels, p=4, k=4, seed=3)
    assert list(s2) == batches  # deterministic for a seed
    s2.set_epoch(1)
    assert list(s2) != batches  # a new order each epoch
    with pytest.raises(Exception, match="at least p=20"):
        PKSampler(labels, p=20, k=4)


def test_real_fake_sampler_composition() -> None:
    is_fake = np.array([False] * 50 + [True] * 17)
    s = RealFakeSampler(is_fake, batch_size=8, real_per_batch=5, fake_per_batch=3, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 10
    for b in batches:
        assert len(b) == 8 and is_fake[b].sum() == 3
    reals = [i for b in batches for i in b if not is_fake[i]]
    assert sorted(reals) == list(range(50))  # every real image once per epoch
    assert batches == list(RealFakeSampler(is_fake, 8, 5, 3, seed=1))
    with pytest.raises(ConfigError, match="must equal batch_size"):
        RealFakeSampler(is_fake, batch_size=8, real_per_batch=5, fake_per_batch=2)


def test_dataloader_two_workers_with_pk_sampler(h5_path: Path) -> None:
    ds = ReidH5Dataset(h5_path, "train", transform=build_transforms(32, 16, train=True))
    sampler = PKSampler(ds.labels, p=3, k=2, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["img"].shape == (6, 3, 32, 16)
        assert batch["target"].shape == (6, 6)
        assert len(set(batch["pid"].tolist())) == 3
        seen += 1
    assert seen == len(sampler)
    rf = RealFakeSampler(ds.is_fake, batch_size=4, real_per_batch=3, fake_per_batch=1)
    for batch in DataLoader(ds, batch_sampler=rf, num_workers=2):
        assert batch["is_fake"].sum().item() == 1


# --------------------------------------------------------------------------------------------
# Batched reads (__getitems__): the DataLoader's path whenever it batches
# --------------------------------------------------------------------------------------------

_WRITERS = {"raw": {}, "raw-lzf": {"compression": "lzf"}, "jpeg": {"encoding": "jpeg"}}


def _reference(h5: Path, positions: list[int], transform: object) -> dict[str, torch.Tensor]:
    """The per-sample path (``__getitem__`` + default_collate) with torchvision-style transforms."""
    ds = ReidH5Dataset(h5, "train", transform=transform)
    return default_collate([ds[p] for p in positions])


@pytest.mark.parametrize("storage", sorted(_WRITERS))
def test_batched_read_matches_per_sample_path(tmp_path: Path, storage: str) -> None:
    h5 = tmp_path / f"{storage}.h5"
    _write(h5, **_WRITERS[storage])
    positions = [29, 3, 17, 3, 0, 22, 8]  # unsorted, a repeat, reals and fakes
    from torchvision.transforms import v2

    ref = _reference(h5, positions, v2.Compose([ResizeIfNeeded((64, 32)), Normalize255()]))
    ds = ReidH5Dataset(h5, "train", transform=build_transforms(64, 32, train=False))
    ds._h5()
    assert (ds._chunked is not None) == (storage == "raw")  # unfiltered raw rows: chunk reads
    got = reid_collate(ds.__getitems__(positions))
    assert got["img"].shape == (7, 3, 64, 32) and got["img"].dtype == torch.float32
    assert torch.equal(got["img"], ref["img"])  # same pixels, bit for bit
    torch.testing.assert_close(got["target"], ref["target"], rtol=1e-6, atol=1e-7)
    for key in ("pid", "camid", "index", "is_fake"):
        assert torch.equal(got[key], ref[key]), key
    # Any other transform runs per sample on the batch read; no transform gives the raw pixels.
    other = ReidH5Dataset(h5, "train", transform=v2.Compose([ResizeIfNeeded((64, 32)), Normalize255()]))
    assert torch.equal(reid_collate(other.__getitems__(positions))["img"], ref["img"])
    if storage != "jpeg":
        raw = ReidH5Dataset(h5, "train")
        assert torch.equal(reid_collate(raw.__getitems__(positions))["img"], _reference(h5, positions, None)["img"])
    else:
        with pytest.raises(DataError, match="different shapes"):
            ReidH5Dataset(h5, "train").__getitems__([0, 1])
    with pytest.raises(IndexError, match="out of range"):
        ds.__getitems__([0, 30])


def test_default_collate_gets_the_same_batch(h5_path: Path) -> None:
    ds = ReidH5Dataset(h5_path, "train", transform=build_transforms(32, 16, train=False))
    batch = ds.__getitems__([5, 1, 20])
    assert isinstance(batch, ReidBatch) and len(batch) == 3 and batch[1]["index"] == 1
    via_default = default_collate(batch)
    fast = reid_collate(batch)
    assert set(via_default) == set(fast)
    for key in fast:
        assert torch.equal(via_default[key], fast[key]), key
    q = ReidH5Dataset(h5_path, "query", transform=build_transforms(32, 16, train=False))
    qb = reid_collate(q.__getitems__([1, 0]))
    assert qb["target"].tolist() == [-1, -1] and qb["pid"].tolist() == [101, 100]


def test_flips_are_per_sample_and_seeded(h5_path: Path) -> None:
    ds = ReidH5Dataset(h5_path, "train", transform=build_transforms(32, 16, train=True, pad=0, normalize=False))
    plain = ReidH5Dataset(h5_path, "train")
    positions = list(range(len(ds)))
    orig = reid_collate(plain.__getitems__(positions))["img"]
    torch.manual_seed(0)
    out = reid_collate(ds.__getitems__(positions))["img"]
    flipped = [bool(torch.equal(o, x.flip(-1))) for o, x in zip(out, orig)]
    kept = [bool(torch.equal(o, x)) for o, x in zip(out, orig)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is flipped or not, whole
    assert 0 < sum(flipped) < len(ds)  # decided per sample, not once per batch
    torch.manual_seed(0)
    assert torch.equal(reid_collate(ds.__getitems__(positions))["img"], out)  # torch's seed decides


def test_pad_crop_shifts_with_zero_fill(h5_path: Path) -> None:
    t = build_transforms(32, 16, train=True, flip_p=0.0, pad=4, normalize=False)
    img = torch.randint(1, 256, (3, 32, 16), dtype=torch.uint8)  # no zeros of its own
    torch.manual_seed(1)
    shifts = set()
    for _ in range(20):
        out = t(img)
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(out, _shift(img, dy, dx))]
        assert len(found) == 1  # a zero-padded crop = the image shifted by at most pad pixels
        shifts.add(found[0])
    assert len(shifts) > 1
    tiny = build_transforms(4, 4, train=True, pad=10, normalize=False)  # pad > size: still a crop
    assert all(tiny(img[:, :4, :4]).shape == (3, 4, 4) for _ in range(20))


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    return padded[:, 4 + dy : 4 + dy + img.shape[1], 4 + dx : 4 + dx + img.shape[2]]


def test_consumer_normalisation_equals_worker_normalisation(h5_path: Path) -> None:
    positions = [4, 9, 0, 28]
    worker = ReidH5Dataset(h5_path, "train", transform=build_transforms(64, 32, train=False))
    consumer = ReidH5Dataset(h5_path, "train", transform=build_transforms(64, 32, train=False, normalize=False))
    u8 = reid_collate(consumer.__getitems__(positions))["img"]
    assert u8.dtype == torch.uint8
    expected = reid_collate(worker.__getitems__(positions))["img"]
    assert torch.equal(normalize_batch(u8), expected)  # channels-last (the reader's layout)
    assert torch.equal(normalize_batch(u8.contiguous()), expected)  # and NCHW
    with pytest.raises(DataError, match="normalize=False"):
        normalize_batch(expected)
    # Random erasing on uint8 fills with the mean pixel: ~0 once normalised.
    erase = build_transforms(64, 32, train=True, random_erasing=True, normalize=False, flip_p=0.0, pad=0)
    torch.manual_seed(0)
    outs = [normalize_batch(erase(torch.full((3, 64, 32), 255, dtype=torch.uint8))[None])[0] for _ in range(8)]
    erased = [o.abs().amax(0) < 0.01 for o in outs]
    assert any(e.any() for e in erased) and all(e.float().mean() < 0.5 for e in erased)


def test_two_workers_batched_with_pk_sampler_match_per_sample(h5_path: Path) -> None:
    ds = ReidH5Dataset(h5_path, "train", transform=build_transforms(32, 16, train=False))
    sampler = PKSampler(ds.labels, p=3, k=2, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=reid_collate)
    batches = list(loader)
    assert len(batches) == len(sampler)
    single = ReidH5Dataset(h5_path, "train", transform=build_transforms(32, 16, train=False))
    for plan, batch in zip(sampler, batches):
        assert batch["index"].tolist() == [int(single.indices[p]) for p in plan]
        ref = default_collate([single[p] for p in plan])
        assert torch.equal(batch["img"], ref["img"])
        assert torch.equal(batch["pid"], ref["pid"]) and len(set(batch["pid"].tolist())) == 3
    # Train transforms: the loader's seed decides every flip; same seed, same epoch.
    train = ReidH5Dataset(h5_path, "train", transform=build_transforms(32, 16, train=True))

    def epoch(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        dl = DataLoader(train, batch_size=8, shuffle=True, num_workers=2, generator=g, collate_fn=reid_collate)
        return torch.cat([b["img"] for b in dl])

    a = epoch(3)
    assert torch.equal(a, epoch(3)) and not torch.equal(a, epoch(4))
