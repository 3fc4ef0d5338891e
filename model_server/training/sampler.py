"""Coreset subsampling of the memory bank: greedy farthest-point selection, streamed.

PatchCore keeps a small subset of training patches that covers the whole feature set (minimax facility
location). The greedy solution picks, one at a time, the point farthest from everything already chosen. Only
the running vector of min distances is kept (O(N) beside the O(N*d) features): there is never an N x N matrix.

A greedy pass over N patches picking k = ratio * N costs O(N^2): `StreamingCoreset` keeps training linear in
the number of images. Patches arrive in chunks; each full chunk gets its own greedy coreset, `oversample`
times larger than the target ratio (so no region a chunk covers is lost), and the union of those is reduced
to the target size by a second greedy pass (per group of bounded size). Memory holds a chunk and the union.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm


class GreedyCoresetSampler:
    """Approximate greedy coreset as in the official PatchCore code.

    Features are first randomly projected to `projection_dim` (Johnson-Lindenstrauss: distances are kept up
    to a small factor, and each greedy step costs N * projection_dim instead of N * d). With
    `num_starting_points > 1` the initial min distances are the mean distance to that many random points,
    only picks a well-placed first point; the traversal itself is always the exact greedy one.
    """

    def __init__(
        self,
        ratio: float,
        projection_dim: int | None = 128,
        num_starting_points: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio
        self.projection_dim = projection_dim
        self.num_starting_points = num_starting_points
        self.seed = seed
        self.progress = progress

    def target_size(self, n: int) -> int:
        return max(1, min(n, int(round(n * self.ratio))))

    def select(self, features: np.ndarray | torch.Tensor, eligible: np.ndarray | None = None) -> np.ndarray:
        """Indices of the chosen points, in selection order.

        `eligible` (bool, True = eligible) lets SoftPatch exclude noisy patches: they can be neither
        chosen nor count as covered.
        """
        x = torch.as_tensor(features, dtype=torch.float32)
        candidates = np.arange(x.shape[0])
        if eligible is not None:
            candidates = np.flatnonzero(eligible)
            x = x[torch.from_numpy(candidates)]
        n = x.shape[0]
        if n == 0:
            raise ValueError("no features to sample from")
        k = self.target_size(n)
        if k >= n:
            return candidates
        generator = torch.Generator().manual_seed(self.seed)
        x = random_projection(x, self.projection_dim, generator)
        chosen = greedy_farthest_points(x, k, self.num_starting_points, generator, progress=self.progress)
        return candidates[chosen]


def projection_matrix(d: int, dim: int | None, seed: int) -> np.ndarray | None:
    """The matrix `random_projection` draws from a generator seeded with `seed` (None: no projection), for
    callers that project their features chunk by chunk."""
    if dim is None or dim >= d:
        return None
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(d, dim, generator=generator) / dim**0.5).numpy()


def random_projection(x: torch.Tensor, dim: int | None, generator: torch.Generator) -> torch.Tensor:
    """Gaussian random projection to `dim` columns (identity when `dim` is None or not smaller).

    Shared by the coreset and SoftPatch's outlier scoring: both need distances only up to a small factor.
    """
    if dim is None or dim >= x.shape[1]:
        return x.contiguous()
    matrix = torch.randn(x.shape[1], dim, generator=generator) / dim**0.5
    return (x @ matrix).contiguous()


def greedy_farthest_points(
    x: torch.Tensor,
    k: int,
    num_starting_points: int,
    generator: torch.Generator,
    progress: bool = False,
) -> np.ndarray:
    """Greedy k-center on the rows of `x`, exact, with triangle-inequality pruning while it pays.

    Every point p remembers its nearest chosen centre a(p) and that distance m(p). A new centre c can only
    come closer to p if d(c, a(p)) < 2 * m(p) (triangle inequality), so only those points are rescanned:
    one gather and compare over N per step instead of an N x d mat-vec, plus distances for the few points
    that pass. The test needs c's distance to every centre so far, which grows with the step; once the
    centres are more than `1 / PRUNE_UNTIL` of the points it costs more than it saves, and every later step
    is one fused mat-vec. Distances are kept squared (the order, and so the picks, are the same).
    """
    n = x.shape[0]
    sq_norms = (x * x).sum(dim=1)
    first = _first_point(x, sq_norms, num_starting_points, generator)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = first
    min_sq = _sq_dist_to(x, sq_norms, x[first])
    assign = torch.zeros(n, dtype=torch.long)
    centers = torch.empty(k, x.shape[1])
    centers[0] = x[first]
    pruned_steps = min(k, max(1, n // PRUNE_UNTIL))
    for i in tqdm(range(1, k), desc="coreset", disable=not progress, leave=False, mininterval=1.0):
        current = int(torch.argmax(min_sq))
        chosen[i] = current
        c = x[current]
        centers[i] = c
        if i < pruned_steps:
            _pruned_step(x, sq_norms, centers[:i], c, i, min_sq, assign)
        else:  # no more pruning: the nearest centre of a point is no longer needed, only its distance
            torch.minimum(min_sq, _sq_dist_to(x, sq_norms, c), out=min_sq)
    return chosen


def _pruned_step(
    x: torch.Tensor,
    sq_norms: torch.Tensor,
    centers: torch.Tensor,
    c: torch.Tensor,
    i: int,
    min_sq: torch.Tensor,
    assign: torch.Tensor,
) -> None:
    """Update, in place, the distances and nearest centres of the points centre `c` (number i) may take."""
    quarter_sq = (centers - c).square_().sum(dim=1).mul_(0.25)  # (d(c, a) / 2)^2 for every centre a
    members = torch.nonzero(quarter_sq[assign] < min_sq).squeeze(1)
    if members.numel() * 2 > x.shape[0]:  # a full mat-vec beats gathering most rows
        full = _sq_dist_to(x, sq_norms, c)
        closer = full < min_sq
        min_sq.copy_(torch.where(closer, full, min_sq))
        assign[closer] = i
        return
    sq = _sq_dist_to(x[members], sq_norms[members], c)
    closer = sq < min_sq[members]
    moved = members[closer]
    min_sq[moved] = sq[closer]
    assign[moved] = i


def _first_point(
    x: torch.Tensor, sq_norms: torch.Tensor, num_starting_points: int, gen: torch.Generator
) -> int:
    """The point farthest on average from a few random anchors (official PatchCore's approximate start)."""
    starts = torch.randperm(x.shape[0], generator=gen)[: max(1, num_starting_points)]
    if num_starting_points <= 1:
        return int(starts[0])
    mean_dist = torch.stack([_sq_dist_to(x, sq_norms, x[int(s)]).sqrt_() for s in starts]).mean(dim=0)
    return int(torch.argmax(mean_dist))


def _sq_dist_to(x: torch.Tensor, sq_norms: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances of the rows of `x` to `c` (|x|^2 - 2 x.c + |c|^2, clamped at 0)."""
    return torch.addmv(sq_norms, x, c, alpha=-2.0).add_(torch.dot(c, c)).clamp_(min=0.0)


#: Pruned greedy steps stop once the centres number n / PRUNE_UNTIL (see `greedy_farthest_points`).
PRUNE_UNTIL = 8
#: Patches per first-level chunk (7 images at 384 px): cache-sized, 2.6x faster per patch than 64k here.
CHUNK_PATCHES = 16_384
#: First-level picks per chunk, as a multiple of the target ratio.
OVERSAMPLE = 2.0
#: Largest union the second level reduces in one greedy pass; a larger one is split into groups reduced in
#: parallel. A pass costs union x picks, so one pass over the union would make training quadratic in the
#: number of images (800 images at 384 px: a 36,864-patch union, 27 s of a 37 s coreset on one core).
GROUP_PATCHES = 32_768


class StreamingCoreset:
    """Two-level greedy coreset over patches that arrive in chunks; remembers which image each bank patch
    came from (for leave-one-image-out threshold scores).

    Chunks are reduced on `workers` threads, each on one core (`one_thread_per_op`): a greedy step's tensor
    operations are too small to split across cores, and split they wait on each other's threads, which on a
    busy machine took training from 13 s to 490 s. Whole chunks in parallel keep every core busy instead.
    The kept points do not depend on the number of workers.
    """

    def __init__(
        self,
        ratio: float,
        projection_dim: int | None = 128,
        seed: int = 0,
        chunk_patches: int = CHUNK_PATCHES,
        oversample: float = OVERSAMPLE,
        progress: bool = False,
        workers: int | None = None,
        group_patches: int = GROUP_PATCHES,
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
        self.ratio, self.projection_dim, self.seed = ratio, projection_dim, seed
        self.chunk_patches, self.oversample, self.progress = chunk_patches, oversample, progress
        self.group_patches = group_patches
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self._pool = ThreadPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0)))
        self._kept: list[Future] = []  # (kept features, their sources) per chunk, in chunk order
        self.seen = 0  # eligible patches offered

    def _sampler(self, ratio: float) -> GreedyCoresetSampler:
        return GreedyCoresetSampler(min(1.0, ratio), self.projection_dim, seed=self.seed)

    def add(self, features: np.ndarray, source: np.ndarray, eligible: np.ndarray | None = None) -> None:
        """Offer patches [M, d] with the image index of each [M]; `eligible` (bool [M]) drops the others.
        Call inside `one_thread_per_op()`."""
        if eligible is not None:
            features, source = features[eligible], source[eligible]
        if len(features) == 0:
            return
        self.seen += len(features)
        self._buffer.append((np.ascontiguousarray(features, dtype=np.float32), np.asarray(source)))
        self._buffered += len(features)
        if self._buffered >= self.chunk_patches:
            self._reduce_buffer(whole_chunks_only=True)

    def _reduce_buffer(self, whole_chunks_only: bool = False) -> None:
        """Hand the buffered patches to the workers in chunks of `chunk_patches` (a greedy pass costs chunk
        size x picks, so a chunk must not grow with the batches `add` is given); keep a partial last one
        unless this is the end."""
        feats = np.concatenate([f for f, _ in self._buffer])
        source = np.concatenate([s for _, s in self._buffer])
        cut = len(feats) - len(feats) % self.chunk_patches if whole_chunks_only else len(feats)
        for start in range(0, cut, self.chunk_patches):
            stop = min(start + self.chunk_patches, cut)
            self._kept.append(self._pool.submit(self._reduce, feats[start:stop], source[start:stop]))
        rest = (feats[cut:], source[cut:])
        self._buffer, self._buffered = ([rest] if len(rest[0]) else []), len(rest[0])

    def _reduce(self, feats: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = self._sampler(self.ratio * self.oversample).select(feats)
        return feats[chosen], source[chosen]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(bank [k, d], source image of each bank patch [k]) with k = round(ratio * patches offered)."""
        return self.finish_levels([self.ratio])[0]

    def finish_levels(self, ratios: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(bank, sources) for each of `ratios` (none above the sampler's), nested: the second pass picks in
        greedy order, so the first picks of each group are that group's greedy coreset at a smaller ratio,
        and a bank grown to a larger ratio costs no second sampling (bank_growth.py)."""
        if any(not 0.0 < r <= self.ratio for r in ratios):
            raise ValueError(f"coreset levels must be in (0, {self.ratio}], got {list(ratios)}")
        if self._buffer:
            self._reduce_buffer()
        if not self._kept:
            raise ValueError("no features to sample from")
        kept = [f.result() for f in self._kept]
        feats = np.concatenate([f for f, _ in kept])
        source = np.concatenate([s for _, s in kept])
        target = max(1, int(round(self.seen * self.ratio)))
        if target >= len(feats):
            self._pool.shutdown()
            return [(feats, source) for _ in ratios]
        groups = np.array_split(np.arange(len(feats)), -(-len(feats) // self.group_patches))
        shares = [max(1, round(target * len(g) / len(feats))) / len(g) for g in groups]
        picks = [
            self._pool.submit(self._sampler(r).select, feats[g]) for g, r in zip(groups, shares, strict=True)
        ]
        ordered = [g[p.result()] for g, p in zip(groups, picks, strict=True)]  # each in greedy order
        self._pool.shutdown()
        levels = []
        for ratio in ratios:
            level = max(1, int(round(self.seen * ratio)))
            chosen = np.concatenate([o[: max(1, round(level * len(o) / target))] for o in ordered])
            levels.append((np.ascontiguousarray(feats[chosen]), source[chosen]))
        return levels


@contextmanager
def one_thread_per_op() -> Iterator[None]:
    """torch operations on one thread each for the duration (the setting is process-wide in torch)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
