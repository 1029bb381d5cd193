"""ReidH5Dataset, re-ID transforms and the PK / real-fake batch samplers."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reidaug.data.h5format import H5Writer, make_targets
from reidaug.data.torchdata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize255,
    PKSampler,
    RealFakeSampler,
    ReidH5Dataset,
    build_transforms,
)
from reidaug.errors import ConfigError


def _write(path: Path, n_ids: int = 6, per_id: int = 3, fakes_per_id: int = 2) -> None:
    """n_ids identities x per_id real images over 2 cameras, plus LSR camstyle fakes."""
    rng = np.random.default_rng(0)
    h, w = 32, 16
    with H5Writer(path, image_size=(h, w)) as wr:
        for i in range(n_ids):
            imgs = rng.integers(0, 256, (per_id, h, w, 3), dtype=np.uint8)
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
