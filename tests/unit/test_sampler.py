"""The streamed coreset must equal brute-force greedy farthest-point selection."""

import numpy as np
import pytest
import torch

from model_server.training.sampler import GreedyCoresetSampler, StreamingCoreset, greedy_farthest_points


def _brute_force(points: torch.Tensor, k: int, first: int) -> list[int]:
    """Greedy farthest-point selection over exact distances (float64: float32 cdist rounds near-ties, about
    2e-7 apart on the clustered set, differently on different CPUs' kernels)."""
    points = points.double()
    full = torch.cdist(points, points)
    min_dist = full[first].clone()
    chosen = [first]
    for _ in range(k - 1):
        nxt = int(torch.argmax(min_dist))
        chosen.append(nxt)
        min_dist = torch.minimum(min_dist, full[nxt])
    return chosen


@pytest.mark.parametrize("clustered", [False, True])
def test_matches_brute_force_farthest_point(clustered: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    points = torch.randn(1500, 8, generator=gen)
    if clustered:  # pruning only kicks in on structured data like real patch features
        points = points * 0.05 + torch.randn(15, 8, generator=gen).repeat_interleave(100, dim=0) * 3
    chosen = greedy_farthest_points(points, 120, 1, torch.Generator().manual_seed(0)).tolist()
    if chosen == _brute_force(points, 120, chosen[0]):
        return
    # float32 distances may break a near-tie the other way on another CPU's kernels: every pick must still be
    # a farthest point (in float64, to float32 rounding) from the ones picked before it
    exact = points.double()
    min_dist = torch.cdist(exact[chosen[:1]], exact)[0]
    for nxt in chosen[1:]:
        assert float(min_dist[nxt]) >= float(min_dist.max()) * (1 - 1e-5), nxt
        min_dist = torch.minimum(min_dist, torch.cdist(exact[[nxt]], exact)[0])
    assert len(set(chosen)) == len(chosen)


def test_sampler_respects_ratio_and_eligibility() -> None:
    features = np.random.default_rng(0).normal(size=(1000, 32)).astype(np.float32)
    eligible = np.ones(1000, dtype=bool)
    eligible[:500] = False
    idx = GreedyCoresetSampler(0.1, projection_dim=16).select(features, eligible)
    assert len(idx) == 50
    assert len(set(idx.tolist())) == 50
    assert (idx >= 500).all()


def test_sampler_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError):
        GreedyCoresetSampler(0.0)


def test_streaming_coreset_covers_every_cluster_at_the_target_size() -> None:
    """Chunks arrive one image batch at a time; clusters that appear in only one chunk still get bank points,
    the bank is ratio * offered patches, and each bank row is the offered row its source index names."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16)).astype(np.float32) * 10
    labels = np.repeat(np.arange(40), 500)  # cluster c only in rows c*500..: one or two chunks each
    feats = centres[labels] + rng.normal(size=(20_000, 16)).astype(np.float32) * 0.1
    coreset = StreamingCoreset(0.01, projection_dim=None, chunk_patches=2048)
    for start in range(0, 20_000, 1000):
        ids = np.arange(start, start + 1000)
        coreset.add(feats[ids], ids)
    bank, source = coreset.finish()
    # chunks of exactly 2048 patches whatever the batches (a chunk's greedy pass costs its size): 9 and a rest
    assert len(bank) == 200 and len(coreset._kept) == 10  # noqa: SLF001
    np.testing.assert_array_equal(bank, feats[source])
    assert set(labels[source]) == set(range(40))


def test_streaming_coreset_leaves_ineligible_patches_out() -> None:
    feats = np.random.default_rng(1).normal(size=(3000, 8)).astype(np.float32)
    eligible = np.arange(3000) % 3 != 0
    coreset = StreamingCoreset(0.05, projection_dim=None, chunk_patches=1000)
    coreset.add(feats, np.arange(3000), eligible)
    bank, source = coreset.finish()
    assert len(bank) == round(0.05 * eligible.sum()) and eligible[source].all()


def test_streaming_coreset_reduces_a_large_union_in_bounded_groups(monkeypatch) -> None:
    """The second level never runs one greedy pass over more than `group_patches` (a pass costs its size x
    picks: one pass over the union would make training quadratic in the images), and still covers every
    cluster at about the target size."""
    sizes: list[int] = []
    select = GreedyCoresetSampler.select

    def recording(self, features, eligible=None):
        sizes.append(len(features))
        return select(self, features, eligible)

    monkeypatch.setattr(GreedyCoresetSampler, "select", recording)
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(40, 16)).astype(np.float32) * 10
    labels = np.repeat(np.arange(40), 500)
    feats = centres[labels] + rng.normal(size=(20_000, 16)).astype(np.float32) * 0.1
    coreset = StreamingCoreset(0.01, projection_dim=None, chunk_patches=2048, group_patches=150)
    coreset.add(feats, np.arange(20_000))
    bank, source = coreset.finish()
    first_level = len(coreset._kept)  # noqa: SLF001
    union = sizes[first_level:]
    assert sum(union) > 150 and max(union) <= 150  # the 400-patch union went in groups
    assert abs(len(bank) - 200) <= len(union) and len(set(source)) == len(bank)
    np.testing.assert_array_equal(bank, feats[source])
    assert set(labels[source]) == set(range(40))
