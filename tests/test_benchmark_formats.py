"""RewardBench 2, RM-Bench and Anthropic HH-RLHF read in their published layouts, and the first
two scored by their own rules: the expected figures are what the benchmarks' own code
(``allenai/reward-bench`` ``reroll_and_score_dataset`` / ``process_single_model``;
``THU-KEG/RM-Bench`` ``compute_accuracy``) returns for the same scores."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from crome_ray.config import load_config
from crome_ray.data.config import IngestConfig
from crome_ray.data.formats import RowContext, detect_format, parse_rewardbench2, split_transcript
from crome_ray.data.ingest import run_ingest
from crome_ray.evaluate.benchmarks import benchmark_scores, best_of_n_result, rewardbench2, rm_bench

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def ingest(tmp_path, path, *overrides):
    cfg = load_config(
        IngestConfig,
        None,
        [f"storage.root={tmp_path}", f"source.path={path}", "source.format=auto", *overrides],
    )
    result = run_ingest(cfg)
    return result.run.read_table("pairs").to_pylist(), result.run.read_table("quarantine").to_pylist()


def scored(pairs, score_of):
    """The benchmark rows of ``pairs`` with each answer's score from ``score_of[text]``."""
    return [
        (json.loads(p["metadata"]), p["subset"], score_of[p["chosen"]], score_of[p["rejected"]])
        for p in pairs
    ]


def test_each_format_is_told_apart_by_its_published_layout():
    rb2 = json.loads((FIXTURES / "rewardbench2.jsonl").read_text().splitlines()[0])
    rmb = json.loads((FIXTURES / "rm_bench" / "chat_filtered.json").read_text())[0]
    with gzip.open(Path("data/samples/eval/hh_rlhf/harmless-base/test.jsonl.gz"), "rt") as f:
        hh = json.loads(f.readline())
    assert (detect_format(rb2), detect_format(rmb), detect_format(hh)) == (
        "rewardbench2",
        "rm_bench",
        "hh_rlhf",
    )
    # chat-message lists are not lists of answers; a plain chosen/rejected row is not a transcript
    assert (
        detect_format({"chosen": [{"role": "user", "content": "q"}], "rejected": [], "prompt": "q"})
        != "rm_bench"
    )
    assert detect_format({"chosen": "Paris.", "rejected": "Lyon."}) == "ultrafeedback_binarized"


def test_rewardbench2_is_scored_best_of_n_with_its_ties_rule(tmp_path):
    rows = [json.loads(x) for x in (FIXTURES / "rewardbench2.jsonl").read_text().splitlines()]
    pairs, quarantined = ingest(tmp_path, FIXTURES / "rewardbench2.jsonl")
    assert not quarantined
    # 101, 202, ref:7: chosen[0] against 3 rejected; tied:7: 4 chosen, 2 rejected: every answer in a pair
    per_group = {}
    for p in pairs:
        per_group.setdefault(json.loads(p["metadata"])["group"], []).append(p)
    assert {g: len(v) for g, v in per_group.items()} == {"101": 3, "202": 3, "tied:7": 5, "ref:7": 3}
    assert len({p["pair_id"] for p in pairs}) == len(pairs)
    # a Ties prompt's ref and tied rows can hold the same two texts: two groups, two pairs (the
    # group is part of the pair's id), or the ingest would drop one as a duplicate
    ref = {
        "id": "ref:3",
        "prompt": "Name a color.",
        "chosen": ["Red"],
        "rejected": ["Brown"],
        "subset": "Ties",
    }
    tied = {**ref, "id": "tied:3", "chosen": ["Red", "Blue"], "num_correct": 2}
    ctx = RowContext("rb2", "x.jsonl:1")
    a, b = parse_rewardbench2(ref, ctx)[0], parse_rewardbench2(tied, ctx)[0]
    assert (a.prompt, a.chosen, a.rejected) == (b.prompt, b.chosen, b.rejected) and a.pair_id != b.pair_id
    # scores in the row's order: chosen, then rejected (the reward-bench verification's)
    fake = {"101": [2.0, 1.0, 0.5, 0.1], "202": [1.0, 1.0, 0.2, 0.3],
            "tied:7": [3.0, 2.9, 2.8, 2.7, 1.0, 0.5], "ref:7": [3.0, 1.0, 0.4, 0.2]}  # fmt: skip
    score_of = {}
    for r in rows:
        for text, s in zip(r["chosen"] + r["rejected"], fake[r["id"]], strict=True):
            score_of[(r["id"], text)] = s
    found = [
        (meta, sub, score_of[meta["group"], c], score_of[meta["group"], r])
        for meta, sub, c, r in [
            (json.loads(p["metadata"]), p["subset"], p["chosen"], p["rejected"]) for p in pairs
        ]
    ]
    got = rewardbench2(found)
    # reward-bench's reroll_and_score_dataset: 101 → 1.0, 202 (a 2-way top tie) → 0.5
    assert got["subsets"]["Factuality"]["score"] == 1.0 and got["subsets"]["Precise IF"]["score"] == 0.5
    # reward-bench's process_single_model on the Ties rows: 1.0099982316165996 (weights sum to 1.01)
    assert got["subsets"]["Ties"]["score"] == pytest.approx(1.0099982316165996, abs=1e-12)
    assert got["score"] == pytest.approx((1.0 + 0.5 + 1.0099982316165996) / 3)
    assert got["incomplete_rows"] == []
    # a row that lost a pair (quarantined) is not scored as if it had fewer answers
    partial = rewardbench2([x for x in found if not (x[0]["group"] == "101" and x[0]["rejected_index"] == 2)])
    assert partial["incomplete_rows"] == ["101"] and "Factuality" not in partial["subsets"]


def test_a_row_holding_one_answer_twice_is_scored_not_dropped(tmp_path):
    row = {"id": "9", "prompt": "2 + 2?", "chosen": ["4"], "rejected": ["5", "4", "22"], "num_correct": 1,
           "num_incorrect": 3, "total_completions": 4, "subset": "Math"}  # fmt: skip
    path = tmp_path / "rb2.jsonl"
    path.write_text(json.dumps(row) + "\n")
    pairs, quarantined = ingest(tmp_path / "runs", path)
    assert not quarantined and len(pairs) == 3 and len({p["pair_id"] for p in pairs}) == 3
    got = rewardbench2(scored(pairs, {"4": 1.0, "5": 0.0, "22": 0.5}))
    assert got["subsets"]["Math"]["score"] == 0.5  # chosen[0] shares the top score with one other


def test_ties_without_a_ref_and_tied_pair_has_no_composite_and_leaves_the_mean_alone():
    def rows(group, subset, correct, incorrect):
        meta = {"benchmark": "rewardbench2", "group": group, "num_correct": len(correct),
                "num_incorrect": len(incorrect)}  # fmt: skip
        out = [({**meta, "chosen_index": 0, "rejected_index": j}, subset, correct[0], r)
               for j, r in enumerate(incorrect)]  # fmt: skip
        out += [({**meta, "chosen_index": i, "rejected_index": 0}, subset, c, incorrect[0])
                for i, c in enumerate(correct[1:], start=1)]  # fmt: skip
        return out

    got = rewardbench2(rows("tied:1", "Ties", [3.0, 2.0], [1.0]) + rows("5", "Math", [2.0], [1.0, 0.0, 0.5]))
    assert got["subsets"]["Ties"]["score"] is None and "ref" in got["subsets"]["Ties"]["note"]
    assert got["score"] == 1.0  # the mean of the subsets that have a score: Math alone


def test_best_of_n_splits_a_top_tie_and_gives_nothing_below_the_top():
    assert best_of_n_result(2.0, [1.0, 0.0, -1.0]) == 1.0
    assert best_of_n_result(2.0, [2.0, 2.0, 0.0]) == pytest.approx(1 / 3)
    assert best_of_n_result(1.0, [2.0, 0.0, 0.0]) == 0.0


def rm_scores(rows):
    """Scores per answer: the RM-Bench verification's (chosen i, rejected j) for each prompt id."""
    sc = {8: ([3, 2, 1], [2.5, 1.5, 0.5]), 2952: ([1, 1, 1], [0, 2, 0]), 3155: ([0, 1, 2], [1, 1, 1]),
          1: ([1, 1, 1], [0, 0, 2])}  # fmt: skip
    out = {}
    for r in rows:
        c, j = sc[r["id"]]
        out.update(zip(r["chosen"], c, strict=True))
        out.update(zip(r["rejected"], j, strict=True))
    return out


def test_rm_bench_is_scored_on_its_three_by_three_styles(tmp_path):
    total = json.loads((FIXTURES / "rm_bench_total_dataset.json").read_text())
    extra = [{"id": 1, "prompt": "p", "chosen": ["a", "b", "c"], "rejected": ["d", "e", "f"], "domain": d}
             for d in ("math", "code")]  # fmt: skip
    path = tmp_path / "total_dataset.json"
    path.write_text(json.dumps(total + extra))
    pairs, quarantined = ingest(tmp_path / "runs", path)
    assert not quarantined and len(pairs) == 9 * 5
    got = rm_bench(scored(pairs, rm_scores(total + extra)))
    # THU-KEG/RM-Bench compute_accuracy on the same scores
    expected = {"chat": 0.666667, "math": 0.666667, "code": 0.666667, "safety": 0.5}
    assert {d: round(v["average"], 6) for d, v in got["domains"].items()} == expected
    assert (round(got["hard"], 6), round(got["normal"], 6), round(got["easy"], 6)) == (
        0.5,
        0.708333,
        0.666667,
    )
    assert round(got["average"], 6) == 0.625 and got["missing_domains"] == []
    # the two safety domains pooled into one, as compute_accuracy pools them
    assert got["domains"]["safety"]["prompts"] == 2


def test_rm_bench_domain_files_take_their_domain_from_the_file_name(tmp_path):
    chat = json.loads((FIXTURES / "rm_bench" / "chat_filtered.json").read_text())
    pairs, quarantined = ingest(tmp_path, FIXTURES / "rm_bench")
    assert not quarantined
    assert {p["subset"] for p in pairs} == {"chat", "safety-response"} and len(pairs) == 27
    meta = json.loads(pairs[0]["metadata"])
    assert meta["benchmark"] == "rm_bench" and meta["source_subset"] in (
        "alpacaeval",
        "xstest-should-respond",
    )
    prompt8 = [p for p in pairs if p["prompt"] == chat[0]["prompt"]]
    got = rm_bench(scored(prompt8, rm_scores(chat[:1])))
    # chat prompt 8 alone: compute_accuracy gives hard 1, normal 1, easy 0
    assert (got["hard"], got["normal"], got["easy"]) == (1.0, 1.0, 0.0)
    assert got["missing_domains"] == ["math", "code", "safety"]


def test_hh_rlhf_transcripts_split_into_the_shared_dialogue_and_the_last_turns(tmp_path):
    pairs, quarantined = ingest(tmp_path, "data/samples/eval/hh_rlhf")
    with gzip.open("data/samples/eval/hh_rlhf/harmless-base/test.jsonl.gz", "rt") as f:
        rows = [json.loads(x) for x in f]
    assert len(pairs) == 31 and {p["subset"] for p in pairs} == {"harmless-base"}
    # one chosen transcript ends with an empty assistant turn: quarantined, said why
    assert len(quarantined) == 1 and quarantined[0]["reason"] == "empty_field"
    first = pairs[0]
    c, r = rows[0]["chosen"], rows[0]["rejected"]
    cut = c.rfind("\n\nAssistant:")
    assert first["prompt"] == c[:cut].strip() and first["prompt"].startswith("Human:")
    assert first["chosen"] == c[cut + len("\n\nAssistant:") :].strip()
    assert first["rejected"] == r[cut + len("\n\nAssistant:") :].strip()


def test_a_turn_that_itself_says_assistant_does_not_move_the_split():
    shared = "\n\nHuman: Are drag queens men?\n\nAssistant: Mostly.\n\nHuman: And drag kings?"
    chosen = shared + "\n\nAssistant: No.  Human: why?\n\nAssistant: Because."
    rejected = shared + "\n\nAssistant: Yes."
    prompt, a, b = split_transcript(chosen, rejected)
    # the last "Assistant:" of the chosen transcript alone would cut inside its own answer
    assert prompt == shared.strip() and a == "No.  Human: why?\n\nAssistant: Because." and b == "Yes."


def test_benchmark_scores_ignores_plain_pairs():
    assert benchmark_scores([({}, "chat", 1.0, 0.0)]) == {}
