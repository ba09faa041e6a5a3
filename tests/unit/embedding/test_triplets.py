"""Triplet loss, in-batch miners, the P x K sampler and FAISS dataset mining, pinned on hand-computed examples.

All distances are SQUARED Euclidean. The in-batch examples use 1-d points (so d = (x_i - x_j)^2 is
easy to check by hand); the dataset-mining example uses unit vectors at angles t, where
d = 2 - 2 cos(t_i - t_j).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from facegate.components.embedding.dataset_mining import (
    TRIPLET_COLUMNS,
    load_triplets,
    mine_dataset_triplets,
    save_triplets,
    still_violating,
)
from facegate.components.embedding.triplets import (
    MINERS,
    BatchHardMiner,
    PKSampler,
    RandomMiner,
    SemiHardMiner,
    get_miner,
    mining_stats,
    pairwise_sq_dists,
    triplet_distances,
    triplet_loss,
)


def points(*xs: float) -> torch.Tensor:
    """1-d embeddings as an N x 1 tensor."""
    return torch.tensor(xs, dtype=torch.float32)[:, None]


def as_lists(t) -> tuple[list[int], list[int], list[int]]:
    return t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()


# ---------------------------------------------------------------- distances, loss, stats


def test_pairwise_sq_dists_on_unit_vectors() -> None:
    # (1,0), (0,1), (-1,0): 90 degrees apart -> d = 2, opposite -> d = 4
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = torch.tensor([[0.0, 2.0, 4.0], [2.0, 0.0, 2.0], [4.0, 2.0, 0.0]])
    assert torch.allclose(pairwise_sq_dists(emb), expected)


def test_pairwise_sq_dists_never_negative_and_zero_diagonal() -> None:
    # identical large vectors: |a|^2 + |b|^2 - 2ab rounds to tiny +-values; must come out exactly 0
    emb = torch.full((3, 64), 123.456, dtype=torch.float32, requires_grad=True)
    d = pairwise_sq_dists(emb)
    assert (d >= 0).all()
    assert torch.equal(torch.diagonal(d), torch.zeros(3))
    d.sum().backward()
    assert torch.isfinite(emb.grad).all()


def test_triplet_loss_hand_computed() -> None:
    # margin 1: max(1-3+1, 0) = 0, max(4-1+1, 0) = 4, max(2-2.5+1, 0) = 0.5 -> mean 4.5 / 3 = 1.5
    d_ap = torch.tensor([1.0, 4.0, 2.0])
    d_an = torch.tensor([3.0, 1.0, 2.5])
    assert triplet_loss(d_ap, d_an, margin=1.0).item() == pytest.approx(1.5)


def test_triplet_loss_without_triplets_is_a_differentiable_zero() -> None:
    emb = torch.randn(2, 3, requires_grad=True)
    d = pairwise_sq_dists(emb)
    empty = torch.empty(0, dtype=torch.long)
    loss = triplet_loss(d[empty, empty], d[empty, empty], margin=0.2)
    assert loss.item() == 0.0
    loss.backward()  # must not raise


def test_mining_stats_hand_computed() -> None:
    # same triplets as the loss test: active = 2 of 3, mean d_ap = 7/3, mean d_an = 6.5/3
    stats = mining_stats(torch.tensor([1.0, 4.0, 2.0]), torch.tensor([3.0, 1.0, 2.5]), margin=1.0)
    assert stats["n_triplets"] == 3
    assert stats["active_fraction"] == pytest.approx(2 / 3)
    assert stats["mean_d_ap"] == pytest.approx(7 / 3)
    assert stats["mean_d_an"] == pytest.approx(6.5 / 3)


def test_mining_stats_empty() -> None:
    stats = mining_stats(torch.empty(0), torch.empty(0), margin=1.0)
    assert stats["n_triplets"] == 0 and stats["active_fraction"] == 0.0
    assert math.isnan(stats["mean_d_ap"]) and math.isnan(stats["mean_d_an"])


# ---------------------------------------------------------------- batch hard

# identity 0: x = 0, 1, 3 (indices 0, 1, 2); identity 1: x = 4, 6, 10 (indices 3, 4, 5)
# squared distances:
#        0    1    2    3    4    5
#   0    0    1    9   16   36  100
#   1    1    0    4    9   25   81
#   2    9    4    0    1    9   49
#   3   16    9    1    0    4   36
#   4   36   25    9    4    0   16
#   5  100   81   49   36   16    0
BH_EMB = points(0, 1, 3, 4, 6, 10)
BH_LABELS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_batch_hard_picks_hardest_positive_and_negative() -> None:
    # a0: positives {1:1, 2:9} -> 2; negatives {3:16, 4:36, 5:100} -> 3
    # a1: positives {0:1, 2:4} -> 2; negatives {3:9, 4:25, 5:81}   -> 3
    # a2: positives {0:9, 1:4} -> 0; negatives {3:1, 4:9, 5:49}    -> 3
    # a3: positives {4:4, 5:36} -> 5; negatives {0:16, 1:9, 2:1}   -> 2
    # a4: positives {3:4, 5:16} -> 5; negatives {0:36, 1:25, 2:9}  -> 2
    # a5: positives {3:36, 4:16} -> 3; negatives {0:100, 1:81, 2:49} -> 2
    t = BatchHardMiner().mine(pairwise_sq_dists(BH_EMB), BH_LABELS, margin=1.0)
    assert as_lists(t) == ([0, 1, 2, 3, 4, 5], [2, 2, 0, 5, 5, 3], [3, 3, 3, 2, 2, 2])


def test_batch_hard_loss_hand_computed_and_differentiable() -> None:
    # d_ap = 9, 4, 9, 36, 16, 36; d_an = 16, 9, 1, 1, 9, 49; margin 1
    # losses: 0, 0, 9, 36, 8, 0 -> mean 53 / 6
    emb = BH_EMB.clone().requires_grad_(True)
    d = pairwise_sq_dists(emb)
    d_ap, d_an = triplet_distances(d, BatchHardMiner().mine(d, BH_LABELS, margin=1.0))
    assert d_ap.tolist() == [9, 4, 9, 36, 16, 36]
    assert d_an.tolist() == [16, 9, 1, 1, 9, 49]
    loss = triplet_loss(d_ap, d_an, margin=1.0)
    assert loss.item() == pytest.approx(53 / 6)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_batch_hard_skips_anchor_without_positive() -> None:
    # identity 2 has a single image (index 4): it can be a negative but is never an anchor
    # x = 0, 1 | 3, 5 | 2 ; a0: pos 1, negs {2:9, 3:25, 4:4} -> 4 ; a2: pos 3, negs {0:9, 1:4, 4:1} -> 4
    emb = points(0, 1, 3, 5, 2)
    labels = torch.tensor([0, 0, 1, 1, 2])
    t = BatchHardMiner().mine(pairwise_sq_dists(emb), labels, margin=1.0)
    assert as_lists(t) == ([0, 1, 2, 3], [1, 0, 3, 2], [4, 4, 4, 4])


def test_miners_return_nothing_for_single_identity_batch() -> None:
    emb = points(0, 1, 2)
    labels = torch.tensor([7, 7, 7])  # positives but no negatives
    for name in MINERS:
        assert len(get_miner(name).mine(pairwise_sq_dists(emb), labels, margin=1.0)) == 0


# ---------------------------------------------------------------- semi hard

# identity 0: x = 0, 2 (indices 0, 1); identity 1: x = 3, 5 (indices 2, 3)
# squared distances: d01 = 4, d02 = 9, d03 = 25, d12 = 1, d13 = 9, d23 = 4
SH_LABELS = torch.tensor([0, 0, 1, 1])


def test_semi_hard_picks_hardest_semi_hard_negative() -> None:
    # margin 5.5, every d_ap = 4 -> window 4 < d_an < 9.5
    # (0,1): negs {2:9, 3:25}  -> 2          (hardest would also be 2)
    # (1,0): negs {2:1, 3:9}   -> 3          (2 is closer than the positive: hard, not semi-hard)
    # (2,3): negs {0:9, 1:1}   -> 0          (1 is hard)
    # (3,2): negs {0:25, 1:9}  -> 1
    emb = points(0, 2, 3, 5)
    t = SemiHardMiner().mine(pairwise_sq_dists(emb), SH_LABELS, margin=5.5)
    assert as_lists(t) == ([0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1])


def test_semi_hard_falls_back_to_easiest_negative() -> None:
    # x = 0, 2 | 3, 7: d01 = 4, d02 = 9, d03 = 49, d12 = 1, d13 = 25, d23 = 16; margin 6
    # (0,1): d_ap 4,  window (4, 10):  negs {2:9, 3:49}  -> 2 semi-hard
    # (1,0): d_ap 4,  window (4, 10):  negs {2:1, 3:25}  -> none -> easiest (largest) 3
    # (2,3): d_ap 16, window (16, 22): negs {0:9, 1:1}   -> none -> easiest 0
    # (3,2): d_ap 16, window (16, 22): negs {0:49, 1:25} -> none -> easiest 0
    emb = points(0, 2, 3, 7)
    t = SemiHardMiner().mine(pairwise_sq_dists(emb), SH_LABELS, margin=6.0)
    assert as_lists(t) == ([0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 0])


def test_semi_hard_window_is_strict() -> None:
    # x = 0, 2 | 3, 5 with margin 5: window (4, 9); d02 = 9 sits on the upper bound -> excluded,
    # so (0,1) falls back to the easiest negative 3 (25). (1,0): 9 excluded, 1 hard -> easiest 3 (9).
    emb = points(0, 2, 3, 5)
    t = SemiHardMiner().mine(pairwise_sq_dists(emb), SH_LABELS, margin=5.0)
    assert as_lists(t)[2][:2] == [3, 3]


# ---------------------------------------------------------------- random

RND_LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])


def test_random_miner_reproducible_and_different_identity() -> None:
    d = pairwise_sq_dists(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)))
    m1, m2 = RandomMiner(seed=3), RandomMiner(seed=3)
    runs1 = [as_lists(m1.mine(d, RND_LABELS, 0.2)) for _ in range(5)]
    runs2 = [as_lists(m2.mine(d, RND_LABELS, 0.2)) for _ in range(5)]
    assert runs1 == runs2
    assert len({tuple(r[2]) for r in runs1}) > 1  # fresh draws on successive batches
    other = [as_lists(RandomMiner(seed=4).mine(d, RND_LABELS, 0.2)) for _ in range(5)]
    assert other != runs1
    for a, p, n in runs1:
        # every anchor-positive pair: 3*2 + 2*1 + 3*2 = 14
        assert len(a) == 14
        assert all(RND_LABELS[x] == RND_LABELS[y] and x != y for x, y in zip(a, p))
        assert all(RND_LABELS[x] != RND_LABELS[y] for x, y in zip(a, n))


def test_random_miner_reaches_every_negative() -> None:
    d = pairwise_sq_dists(points(0, 1, 2, 3, 4, 5, 6, 7))
    miner = RandomMiner(seed=0)
    seen: set[int] = set()
    for _ in range(50):
        t = miner.mine(d, RND_LABELS, 0.2)
        seen |= set(t.negative[t.anchor == 0].tolist())
    assert seen == {3, 4, 5, 6, 7}


def test_registry() -> None:
    assert set(MINERS) == {"batch_hard", "semi_hard", "random"}
    assert all(cls.name == key for key, cls in MINERS.items())
    assert isinstance(get_miner("random", seed=1), RandomMiner)
    with pytest.raises(ValueError, match="unknown miner"):
        get_miner("hardest")


# ---------------------------------------------------------------- P x K sampler

# identity: 0 x5, 1 x3, 2 x2 (< K: topped up with replacement), 3 x1 (never drawn), 4 x4
PK_LABELS = np.array([0] * 5 + [1] * 3 + [2] * 2 + [3] * 1 + [4] * 4)


def test_pk_sampler_batches() -> None:
    sampler = PKSampler(PK_LABELS, p=2, k=3, seed=0)
    assert len(sampler) == 2  # 4 eligible identities // P
    batches = list(sampler)
    assert len(batches) == 2
    seen: list[int] = []
    for batch in batches:
        assert len(batch) == 6
        ids, counts = np.unique(PK_LABELS[batch], return_counts=True)
        assert len(ids) == 2 and counts.tolist() == [3, 3]
        assert 3 not in ids
        for i in ids:
            imgs = [b for b in batch if PK_LABELS[b] == i]
            if i == 2:
                assert set(imgs) == {8, 9}  # both images present, one repeated
            else:
                assert len(set(imgs)) == 3  # enough images: no repetition
        seen.extend(ids.tolist())
    assert sorted(seen) == [0, 1, 2, 4]  # each eligible identity once per epoch


def test_pk_sampler_seeded_and_epochs_differ() -> None:
    a, b = PKSampler(PK_LABELS, 2, 3, seed=5), PKSampler(PK_LABELS, 2, 3, seed=5)
    epochs_a = [list(a) for _ in range(4)]
    assert epochs_a == [list(b) for _ in range(4)]
    assert any(e != epochs_a[0] for e in epochs_a[1:])
    b.set_epoch(2)
    assert list(b) == epochs_a[2]


def test_pk_sampler_in_dataloader_and_fixed_length() -> None:
    ds = TensorDataset(torch.arange(len(PK_LABELS)))
    loader = DataLoader(ds, batch_sampler=PKSampler(PK_LABELS, 2, 2, seed=1, batches_per_epoch=5))
    batches = [x for (x,) in loader]
    assert len(batches) == 5 and all(x.shape == (4,) for x in batches)


def test_pk_sampler_rejects_too_few_identities() -> None:
    with pytest.raises(ValueError, match="identities"):
        PKSampler(np.array([0, 0, 1]), p=2, k=2)


# ---------------------------------------------------------------- dataset mining (FAISS)

# unit vectors at these angles (degrees); identities 0, 0, 1, 1, 2, 2
# d = 2 - 2 cos(dt):
#        0       1       2       3       4       5
#   0    0     .4679   .0681  2.3473  3.7321  3.0000     dt: 40, 15, 100, 150, 120
#   1  .4679     0     .1874  1.0000  3.9696  3.8794     dt: 25, 60, 170, 160
#   2  .0681   .1874     0    1.8257  3.9319  3.4142     dt: 85, 165, 135
#   3  2.3473  1.0000  1.8257    0    2.6840  3.5321     dt: 110, 140
#   4  3.7321  3.9696  3.9319  2.6840    0     .2679     dt: 30
ANGLES = np.array([0.0, 40.0, 15.0, 100.0, 210.0, 240.0])
DS_LABELS = np.array([0, 0, 1, 1, 2, 2])


def unit(angles_deg: np.ndarray) -> np.ndarray:
    t = np.radians(angles_deg)
    return np.stack([np.cos(t), np.sin(t)], axis=1).astype(np.float32)


def sq(dt_deg: float) -> float:
    return 2 - 2 * math.cos(math.radians(dt_deg))


def test_dataset_mining_hard() -> None:
    # nearest other-identity image per anchor: a0 -> 2 (.068), a1 -> 2 (.187), a2 -> 0 (.068),
    # a3 -> 1 (1.0), a4 -> 3 (2.684), a5 -> 0 (3.0)
    df = mine_dataset_triplets(unit(ANGLES), DS_LABELS, margin=1.0, strategy="hard")
    assert list(df.columns) == TRIPLET_COLUMNS
    assert df["anchor"].tolist() == [0, 1, 2, 3, 4, 5]
    assert df["positive"].tolist() == [1, 0, 3, 2, 5, 4]
    assert df["negative"].tolist() == [2, 2, 0, 1, 3, 0]
    assert df["d_ap"].tolist() == pytest.approx([sq(40), sq(40), sq(85), sq(85), sq(30), sq(30)], abs=1e-5)
    assert df["d_an"].tolist() == pytest.approx([sq(15), sq(25), sq(15), sq(60), sq(110), sq(120)], abs=1e-5)


def test_dataset_mining_semi_hard_with_fallback() -> None:
    # margin 1, window d_ap < d_an < d_ap + 1:
    # a0: d_ap .468, window (.468, 1.468): negs .068, 2.347, 3.732, 3.0 -> none -> hard 2
    # a1: d_ap .468: negs 2:.187 (hard), 3:1.0 -> 3
    # a2: d_ap 1.826, window (1.826, 2.826): negs .068, .187, 3.932, 3.414 -> none -> hard 0
    # a3: d_ap 1.826: negs 0:2.347, 1:1.0, 4:2.684, 5:3.532 -> hardest semi-hard 0
    # a4: d_ap .268, window (.268, 1.268): all negs > 2.6 -> hard 3 ; a5 likewise -> hard 0
    df = mine_dataset_triplets(unit(ANGLES), DS_LABELS, margin=1.0, strategy="semi_hard")
    assert df["negative"].tolist() == [2, 3, 0, 0, 3, 0]
    # margin 2: a0 window (.468, 2.468) -> 3 (2.347); a2 window (1.826, 3.826) -> 5 (3.414, 4 is 3.932)
    df2 = mine_dataset_triplets(unit(ANGLES), DS_LABELS, margin=2.0, strategy="semi_hard")
    assert df2["negative"].tolist() == [3, 3, 5, 0, 3, 0]
    assert df2.attrs["strategy"] == "semi_hard" and df2.attrs["margin"] == 2.0


def test_dataset_mining_k_limits_the_search() -> None:
    # k = 1: a4's and a5's single nearest neighbour is each other (same identity) -> no triplet
    df = mine_dataset_triplets(unit(ANGLES), DS_LABELS, margin=1.0, k=1, strategy="hard")
    assert df["anchor"].tolist() == [0, 1, 2, 3]
    assert df["negative"].tolist() == [2, 2, 0, 1]


def test_dataset_mining_caps_positives_per_anchor_seeded() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0] * 10 + [1] * 10)
    df = mine_dataset_triplets(emb, labels, margin=0.2, max_positives_per_anchor=3, seed=7)
    assert (df.groupby("anchor").size() == 3).all() and len(df) == 60
    assert (labels[df["anchor"]] == labels[df["positive"]]).all()
    assert (labels[df["anchor"]] != labels[df["negative"]]).all()
    again = mine_dataset_triplets(emb, labels, margin=0.2, max_positives_per_anchor=3, seed=7)
    pd.testing.assert_frame_equal(df, again)


def test_dataset_mining_rejects_unnormalised() -> None:
    with pytest.raises(ValueError, match="L2-normalised"):
        mine_dataset_triplets(unit(ANGLES) * 2, DS_LABELS, margin=1.0)


def test_still_violating_drops_triplets_once_apart() -> None:
    emb = unit(ANGLES)
    df = mine_dataset_triplets(emb, DS_LABELS, margin=1.0, strategy="hard")
    # same embeddings: a4 (.268 - 2.684 + 1 < 0) and a5 (.268 - 3 + 1 < 0) are already satisfied
    kept = still_violating(df, emb, margin=1.0)
    assert kept["anchor"].tolist() == [0, 1, 2, 3]
    # move image 2 from 15 to 180 degrees: (0,1,2) .468 - 4 + 1 < 0, (1,0,2) .468 - 3.532 + 1 < 0,
    # (2,3,0) d_ap = sq(80) 1.653 - 4 + 1 < 0 -> dropped; (3,2,1) 1.653 - 1 + 1 > 0 -> kept
    moved = unit(np.array([0.0, 40.0, 180.0, 100.0, 210.0, 240.0]))
    kept = still_violating(df, moved, margin=1.0)
    assert kept[["anchor", "positive", "negative"]].values.tolist() == [[3, 2, 1]]
    assert kept["d_ap"].iloc[0] == pytest.approx(sq(80), abs=1e-5)
    assert kept["d_an"].iloc[0] == pytest.approx(sq(60), abs=1e-5)


def test_triplets_parquet_roundtrip(tmp_path) -> None:
    df = mine_dataset_triplets(unit(ANGLES), DS_LABELS, margin=1.0, strategy="semi_hard")
    path = save_triplets(df, tmp_path / "mined" / "triplets.parquet")
    back = load_triplets(path)
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs["strategy"] == "semi_hard" and back.attrs["k"] == 50  # mining settings travel along
    with pytest.raises(ValueError, match="lacks columns"):
        save_triplets(df.drop(columns="d_an"), tmp_path / "bad.parquet")
