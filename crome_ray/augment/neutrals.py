"""Neutral pairs that need no oracle: IQN (irrelevant-query neutrals) and the RRM baseline's pairs. Pure.

IQN puts two answers to one request under another request and labels the pair a tie: to
the other request, neither answer is better. The paper does not say how the other request
is chosen and names the risk of choosing it at random: an "irrelevant" request that one
answer happens to address turns the tie into a false label (IQN contamination). So the
request is chosen on purpose: among ``candidates`` requests drawn with a fixed seed, the one
least similar to the pair's own request by sentence embedding (MiniLM in the pipeline;
any unit vectors here). Each IQN pair records the method and that similarity, so a run can
be audited and a threshold applied later.

RRM (arXiv 2409.13156) is the non-contextual augmentation Crome is compared with: under
request Q, an answer written for Q is preferred to an answer written for another
request, and two answers written for other requests are a tie. Its pairs are built here
from the same least-similar choice, so the baseline and Crome differ in the method, not in
how the other requests were picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Irrelevant:
    index: int  # the chosen other request
    similarity: float  # cosine with the pair's own request
    method: str


def least_similar(embeddings: np.ndarray, *, candidates: int = 64, seed: int = 0) -> list[Irrelevant]:
    """For each row of ``embeddings`` (unit vectors of the requests), the least similar of
    ``candidates`` other rows drawn at random with ``seed`` (all other rows when fewer).

    The draw makes the choice cost O(n · candidates) rather than O(n²), and it is the same for
    the same inputs and seed. Rows with identical requests are never chosen for each other
    unless nothing else is left."""
    n = len(embeddings)
    if n < 2:
        raise ValueError("IQN needs at least 2 requests to choose an irrelevant one from")
    emb = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms == 0, 1, norms)
    rng = np.random.default_rng(seed)
    k = min(candidates, n - 1)
    method = f"least-similar-of-{k}" if k < n - 1 else f"least-similar-of-all-{k}"
    out = []
    for i in range(n):
        if k == n - 1:
            pool = np.delete(np.arange(n), i)
        else:
            pool = rng.choice(n - 1, size=k, replace=False)
            pool = pool + (pool >= i)  # skip i itself
        sims = emb[pool] @ emb[i]
        j = int(np.argmin(sims))
        out.append(Irrelevant(int(pool[j]), round(float(sims[j]), 4), method))
    return out


def _stable_seed(seed: int, key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def least_similar_in_pool(
    query: np.ndarray,
    own: list[str],
    keys: list[str],
    pool: np.ndarray,
    pool_texts: list[str],
    *,
    candidates: int = 64,
    seed: int = 0,
) -> list[tuple[Irrelevant, int | None]]:
    """For each query row (unit vectors of requests ``own``), the least similar of ``candidates``
    pool rows drawn with a seed made from ``seed`` and the row's ``keys`` entry: the same choice
    for the same example in any batch, on any worker. A pool row with the same request text is
    never chosen. Each answer also names the runner-up (RRM's third answer), or None."""
    n = len(pool)
    if n < 2:
        raise ValueError("IQN needs a pool of at least 2 requests to choose an irrelevant one from")
    k = min(candidates, n)
    method = f"least-similar-of-{k}" if k < n else f"least-similar-of-pool-{n}"
    out = []
    for i in range(len(query)):
        rng = np.random.default_rng(_stable_seed(seed, keys[i]))
        draw = rng.choice(n, size=k, replace=False) if k < n else np.arange(n)
        draw = np.array([j for j in draw if pool_texts[j] != own[i]], dtype=np.int64)
        if len(draw) == 0:  # every drawn request was this one: take any other
            draw = np.array([j for j in range(n) if pool_texts[j] != own[i]][:k], dtype=np.int64)
        if len(draw) == 0:
            raise ValueError("every request in the IQN pool is this example's own request")
        sims = pool[draw] @ query[i]
        order = np.argsort(sims, kind="stable")
        best = int(draw[order[0]])
        second = int(draw[order[1]]) if len(order) > 1 else None
        out.append((Irrelevant(best, round(float(sims[order[0]]), 4), method), second))
    return out
