"""IQN on real requests: MiniLM embeddings put paraphrases together, and the least-similar choice
picks other requests far less related than a random pick would (slow tier: a real model)."""

import json

import numpy as np
import pytest

from crome_ray.augment.embed import Embedder
from crome_ray.augment.neutrals import least_similar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder(minilm_path):
    return Embedder(minilm_path, batch_size=16)


def test_paraphrased_requests_are_closer_than_unrelated_ones_and_order_is_kept(embedder):
    texts = ["How do I bake a loaf of bread?", "What is a simple recipe for homemade bread?",
             "Explain quantum tunnelling to a physics student."]  # fmt: skip
    emb = embedder(texts)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.6 > 0.2 > emb[0] @ emb[2]
    alone = np.vstack([embedder([t]) for t in texts])  # sorted batching does not reorder rows
    assert np.allclose(alone, emb, atol=1e-5)


def test_on_the_sample_the_chosen_irrelevant_request_is_far_less_related_than_a_random_one(embedder, samples):
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    emb = embedder([r["prompt"] for r in rows])
    picks = least_similar(emb, candidates=64, seed=0)
    chosen = np.array([p.similarity for p in picks])
    rng = np.random.default_rng(0)
    random_other = [(i + rng.integers(1, len(rows))) % len(rows) for i in range(len(rows))]
    at_random = np.array([emb[i] @ emb[j] for i, j in enumerate(random_other)])
    assert chosen.max() < np.median(at_random), (chosen.max(), np.median(at_random))
    assert np.mean(chosen) < np.mean(at_random) - 0.1
