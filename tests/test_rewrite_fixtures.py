"""The code checks against rewrites as oracles wrote them: every junk form seen (the demo's SmolLM2
table, and the forms the prompts forbid) is refused, and hand-written good CAN, PARA and causal
rewrites of real UltraFeedback answers pass (slow tier: the neutrals' meaning check embeds with
the real MiniLM)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from crome_ray.augment.checks import neutral_problem, rewrite_problem
from crome_ray.augment.config import RewriteChecks
from crome_ray.augment.embed import Embedder
from crome_ray.augment.kinds import BY_NAME

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
CHECKS = RewriteChecks()


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}_rewrites.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def embedder(minilm_path):
    return Embedder(minilm_path)


def verdicts(fixture: list[dict], embedder: Embedder | None) -> list[str | None]:
    """The check that refused each rewrite (None: accepted), as the flow runs them."""
    out = []
    for r in fixture:
        kind = BY_NAME[r["kind"]]
        neutral = kind.label == "tie"
        problem = rewrite_problem(r["source"], r["rewrite"], CHECKS, neutral=neutral,
                                  a=r["a"] if kind.carries_a else None, request=r["prompt"])  # fmt: skip
        if problem is None and neutral:
            cosine = None
            if embedder is not None:
                a, b = embedder([r["a"], r["rewrite"]])
                cosine = float(a @ b)
            problem = (
                ("meaning", reason)
                if (reason := neutral_problem(r["a"], r["rewrite"], CHECKS, cosine))
                else None
            )
        out.append(problem[0] if problem else None)
    return out


def test_the_fixtures_are_real_answers_with_rewrites_of_every_kind():
    junk, good = rows("junk"), rows("good")
    assert len(junk) >= 20 and len(good) >= 20
    assert {r["kind"] for r in good} >= {"neutral_can", "neutral_para", "causal_degrade", "causal_upgrade"}
    samples = Path(__file__).parents[1] / "data" / "samples" / "ultrafeedback" / "train_1k.jsonl"
    sample = [json.loads(line) for line in samples.read_text().splitlines()]
    for r in junk + good:  # the sources are the sample's own texts, not written for the test
        assert (r["a"], r["b"]) == (
            sample[r["sample_index"]]["chosen"],
            sample[r["sample_index"]]["rejected"],
        )


@pytest.mark.parametrize("with_embedder", [True, False], ids=["minilm", "word-overlap"])
def test_every_junk_rewrite_is_refused_and_each_new_check_refuses_some(embedder, with_embedder):
    junk = rows("junk")
    got = verdicts(junk, embedder if with_embedder else None)
    missed = [r["rewrite"][:60] for r, v in zip(junk, got, strict=True) if v is None]
    assert not missed
    assert set(Counter(got)) >= {"length", "placeholder", "echo", "meaning", "repetition"}


def test_good_rewrites_pass_with_the_embedder(embedder):
    good = rows("good")
    got = verdicts(good, embedder)
    refused = [(r["kind"], r["rewrite"][:60], v) for r, v in zip(good, got, strict=True) if v]
    assert len(refused) <= 0.05 * len(good), refused
