"""IQN's irrelevant request is chosen on purpose: the least similar of a seeded draw, never the
pair's own request, with the method and the similarity recorded."""

import numpy as np
import pytest

from crome_ray.augment.neutrals import least_similar


def clusters():
    """Three tight groups of requests on three orthogonal directions, plus one opposite to group 0."""
    rng = np.random.default_rng(1)
    rows = []
    for axis in (0, 1, 2):
        for _ in range(5):
            v = np.zeros(8)
            v[axis] = 1.0
            rows.append(v + rng.normal(0, 0.05, 8))
    opposite = np.zeros(8)
    opposite[0] = -1.0
    rows.append(opposite)
    return np.array(rows)


def test_with_every_request_as_a_candidate_the_least_similar_one_is_chosen():
    emb = clusters()
    picks = least_similar(emb, candidates=100)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for i, p in enumerate(picks):
        sims = unit @ unit[i]
        sims[i] = np.inf
        assert p.index == int(np.argmin(sims)) and p.similarity == pytest.approx(sims[p.index], abs=1e-4)
        assert p.method == "least-similar-of-all-15"
    assert all(picks[i].index == 15 for i in range(5))  # group 0 gets the request opposite to it
    assert picks[15].index in range(5) and picks[15].similarity < -0.9


def test_a_seeded_draw_never_offers_the_request_itself_and_repeats_with_the_seed():
    emb = clusters()
    a = least_similar(emb, candidates=4, seed=7)
    assert a == least_similar(emb, candidates=4, seed=7)
    assert a != least_similar(emb, candidates=4, seed=8)
    assert all(p.index != i and p.method == "least-similar-of-4" for i, p in enumerate(a))
    # identical requests: the other copy is chosen only when nothing else exists
    same = np.ones((2, 4))
    assert [p.index for p in least_similar(same)] == [1, 0] and least_similar(same)[0].similarity == 1.0


def test_iqn_needs_two_requests():
    with pytest.raises(ValueError, match="at least 2"):
        least_similar(np.ones((1, 4)))
