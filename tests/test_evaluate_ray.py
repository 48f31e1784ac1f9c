"""The evaluation job on the local Ray cluster: two reward models scored side by side on a
RewardBench-format file built so that each pair's outcome under model A is known (its own
scores, taken beforehand in this process, decide which answer goes on which side). The
categories must then come out as the worked example computed by hand, and every other number
must agree with the scores table it was computed from."""

import json
from collections import Counter
from pathlib import Path

import pytest

from crome_ray.config import load_config
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.evaluate.job import EvaluateError, run_evaluate_job
from crome_ray.evaluate.report import PLOTS
from crome_ray.evaluate.transforms import TRANSFORMATIONS, applies
from crome_ray.train.score import RewardScorer
from tests.local_models import random_reward_bert, wordpiece_tokenizer

pytestmark = pytest.mark.ray

MAX_LENGTH = 128
# subset -> (right, wrong, tied): the hand-computed worked example of test_evaluate_categories
DESIGN = {
    "llmbar-natural": (3, 1, 0),
    "mt-bench-hard": (0, 1, 1),
    "xstest-should-respond": (8, 2, 0),
    "xstest-should-refuse": (1, 1, 0),
    "hep-python": (2, 0, 0),
    "hep-go": (1, 3, 0),
    "math-prm": (1, 1, 0),
}
EXPECTED = {"Chat Hard": 3.5 / 6, "Safety": 9 / 12, "Reasoning": 6 / 12}


@pytest.fixture(scope="module")
def models(tmp_path_factory, samples):
    tok = wordpiece_tokenizer(tmp_path_factory.mktemp("wp"), samples)
    return [random_reward_bert(tmp_path_factory.mktemp(f"rm{s}"), tok, seed=s) for s in (1, 2)]


def designed_file(path: Path, model: Path, samples: Path) -> Path:
    """RewardBench-format rows whose outcome under ``model`` is DESIGN's."""
    source = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    scorer = RewardScorer(str(model), max_length=MAX_LENGTH, device="cpu")
    oriented = []
    for r in source:
        c, j = scorer.score([r["prompt"]] * 2, [r["chosen"], r["rejected"]])
        if abs(c - j) > 1e-3:  # clear of float noise from batching
            oriented.append(
                (r["prompt"], *((r["chosen"], r["rejected"]) if c > j else (r["rejected"], r["chosen"])))
            )
    rows, i = [], 0
    for subset, (right, wrong, tied) in DESIGN.items():
        for kind in ["right"] * right + ["wrong"] * wrong + ["tied"] * tied:
            prompt, hi, lo = oriented[i]
            i += 1
            # a tie: two answers that differ only past the MAX_LENGTH tokens the model reads (the
            # ingest refuses a pair of one text twice)
            long = " ".join([hi] * (1 + 8 * MAX_LENGTH // max(1, len(hi))))
            chosen, rejected = {"right": (hi, lo), "wrong": (lo, hi), "tied": (long + " A", long + " B")}[
                kind
            ]
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "subset": subset, "id": i})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, ray_cluster, models, samples):
    tmp = tmp_path_factory.mktemp("evaluate")
    data = designed_file(tmp / "designed.jsonl", models[0], samples)
    cfg = load_config(
        EvaluateConfig,
        None,
        [
            f"models=[{models[0]}, {models[1]}]",
            "labels=[A, B]",
            f"data={data}",
            f"storage.root={tmp}/runs",
            f"scoring.max_length={MAX_LENGTH}",
            "scoring.batch_size=16",
            "best_of_n.limit=12",
        ],
    )
    logs: list[str] = []
    result = run_evaluate_job(cfg, log=logs.append)
    again = run_evaluate_job(cfg, log=logs.append)
    return {"cfg": cfg, "result": result, "again": again, "logs": logs, "data": data}


def test_the_categories_come_out_as_the_worked_example_computed_by_hand(evaluated):
    report = json.loads(Path(evaluated["result"].run.file("report.json")).read_text())
    a = report["models"]["A"]
    assert a["categories"] == pytest.approx(EXPECTED, abs=1e-12)
    assert a["average"] == pytest.approx(sum(EXPECTED.values()) / 3, abs=1e-12)
    assert a["ties"] == 1 and a["category_weights"]["math-prm"] == 6
    assert {s: (v["pairs"], v["ties"]) for s, v in a["subsets"].items()} == {
        s: (r + w + t, t) for s, (r, w, t) in DESIGN.items()
    }
    assert evaluated["result"].details["models"]["A"]["categories"] == a["categories"]


def test_every_number_agrees_with_the_scores_table_it_came_from(evaluated):
    result = evaluated["result"]
    scores = result.run.read_table("scores").to_pylist()
    report = json.loads(Path(result.run.file("report.json")).read_text())
    rows = [json.loads(x) for x in evaluated["data"].read_text().splitlines()]
    n = len(rows)
    for label in ("A", "B"):
        mine = [r for r in scores if r["model"] == label]
        original = {r["pair_id"]: r for r in mine if r["variant"] == "original"}
        assert len(original) == n == report["models"][label]["pairs"]
        m = report["models"][label]
        assert m["overall"] == pytest.approx(sum(r["outcome"] for r in original.values()) / n)
        for name, t in m["transformations"].items():
            changed = [r for r in mine if r["variant"] == name]
            # the pairs it applies to, decided independently here
            assert (
                t["pairs"]
                == len(changed)
                == sum(applies(TRANSFORMATIONS[name], r["prompt"], r["chosen"], r["rejected"]) for r in rows)
            )
            if changed:
                assert t["accuracy"] == pytest.approx(sum(r["outcome"] for r in changed) / len(changed))
                before = [
                    s
                    for r in changed
                    for s in (
                        original[r["pair_id"]]["score_chosen"],
                        original[r["pair_id"]]["score_rejected"],
                    )
                ]
                after = [s for r in changed for s in (r["score_chosen"], r["score_rejected"])]
                assert t["shift"]["mean"] == pytest.approx(
                    sum(after) / len(after) - sum(before) / len(before)
                )
        cue = [r for r in mine if r["variant"] == "cue_on_rejected"]
        assert m["cue"]["accuracy_cue_on_rejected"] == pytest.approx(sum(r["outcome"] for r in cue) / n)
        # the chosen answer is the same text in the cue-on-rejected variant: scored once, the same score
        assert all(r["score_chosen"] == original[r["pair_id"]]["score_chosen"] for r in cue)
    variants = Counter(r["variant"] for r in scores if r["model"] == "A")
    assert variants["original"] == n and variants["rot13"] == n and variants["cue_on_chosen"] == n
    assert result.counts["variants"] == sum(variants.values()) and len(scores) == 2 * sum(variants.values())
    # two different models were scored, not one twice
    a = {(r["pair_id"], r["variant"]): r["score_chosen"] for r in scores if r["model"] == "A"}
    b = {(r["pair_id"], r["variant"]): r["score_chosen"] for r in scores if r["model"] == "B"}
    assert a.keys() == b.keys() and a != b
    # B − A, paired over the same pairs, from the same table
    outcome = {(r["model"], r["pair_id"]): r["outcome"] for r in scores if r["variant"] == "original"}
    diff = report["differences"]
    assert diff["baseline"] == "A" and list(diff["models"]) == ["B"]
    by_hand = sum(outcome["B", p] - outcome["A", p] for p in original) / n
    assert diff["models"]["B"]["overall"]["value"] == pytest.approx(by_hand)
    for label in ("A", "B"):
        iv = report["models"][label]["intervals"]
        assert iv["overall"]["value"] == pytest.approx(report["models"][label]["overall"])
        assert iv["overall"]["low"] <= iv["overall"]["value"] <= iv["overall"]["high"]
        assert set(iv["subsets"]) == set(DESIGN) and set(iv["categories"]) == set(EXPECTED)


def test_the_report_has_a_table_and_real_plots(evaluated):
    from PIL import Image

    run = evaluated["result"].run
    md = Path(run.file("report.md")).read_text()
    assert "| A |" in md and "| B |" in md and "Chat Hard" in md and "rot13" in md and "Planted cue" in md
    assert "## Differences against A" in md and "| B − A |" in md and "## Per subset" in md
    for name in PLOTS:
        with Image.open(run.file(name)) as img:
            img.verify()
        with Image.open(run.file(name)) as img:
            assert img.format == "PNG" and img.size[0] >= 600 and img.size[1] >= 300
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 2


def test_a_second_run_with_the_same_config_is_a_no_op(evaluated):
    assert evaluated["again"].skipped and evaluated["again"].run.uri == evaluated["result"].run.uri
    assert any("distinct texts" in line for line in evaluated["logs"])


def test_a_rerun_scores_only_the_model_that_changed(evaluated, models, tmp_path):
    import shutil

    cfg, first = evaluated["cfg"], evaluated["result"]
    texts = first.manifest["counts"]["texts"]
    assert first.details["scores_from_cache"] == {"A": 0, "B": 0}
    logs: list[str] = []
    rerun = run_evaluate_job(cfg, force=True, log=logs.append)
    assert rerun.details["scores_from_cache"] == {"A": texts, "B": texts}
    assert not any("texts scored (" in line for line in logs)  # no scoring progress: nothing scored
    assert rerun.details["models"] == first.details["models"]  # the same numbers, intervals included
    changed = tmp_path / "B-retrained"
    shutil.copytree(models[1], changed)  # a model that is not the one scored before
    other = run_evaluate_job(
        cfg.model_copy(update={"models": [str(models[0]), str(changed)]}), log=logs.append
    )
    assert other.details["scores_from_cache"] == {"A": texts, "B": 0}
    assert other.details["models"]["B"]["categories"] == pytest.approx(
        first.details["models"]["B"]["categories"]
    )


def test_a_model_path_that_is_not_there_is_named_before_anything_runs(tmp_path):
    cfg = load_config(
        EvaluateConfig, None, [f"models=[{tmp_path}/no-such-model]", f"storage.root={tmp_path}"]
    )
    with pytest.raises(EvaluateError, match="no-such-model does not exist"):
        run_evaluate_job(cfg)
    assert not (tmp_path / "evaluate").exists()


def test_crome_ray_evaluate_prints_the_table_and_the_reports_path(tmp_path, ray_cluster, models, evaluated):
    from typer.testing import CliRunner

    from crome_ray.cli import app

    res = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(models[1]), "--label", "only-b", "--data", str(evaluated["data"]),
         "--output", str(tmp_path), "transformations=[rot13]", "cue.enabled=false", "best_of_n.enabled=false",
         f"scoring.max_length={MAX_LENGTH}"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "only-b" in res.output and "Chat Hard" in res.output and "equal scores count as 1/2" in res.output
    report = res.output.split("report:", 1)[1].split()[0]
    assert report.endswith("report.md") and Path(report).is_file()
    doc = json.loads(Path(report).with_name("report.json").read_text())
    assert list(doc["models"]) == ["only-b"] and list(doc["models"]["only-b"]["transformations"]) == ["rot13"]
    assert "cue" not in doc["models"]["only-b"] and "best_of_n" not in doc["models"]["only-b"]
    # the same model as in the module's run: the same untransformed numbers
    first = json.loads(Path(evaluated["result"].run.file("report.json")).read_text())["models"]["B"]
    assert doc["models"]["only-b"]["categories"] == pytest.approx(first["categories"])
    bad = CliRunner().invoke(app, ["evaluate", "--data", str(evaluated["data"])])
    assert bad.exit_code == 2 and "models" in bad.output


def test_best_of_n_picks_the_highest_reward_and_its_rates_agree_with_the_table(evaluated):
    result = evaluated["result"]
    rows = result.run.read_table("best_of_n").to_pylist()
    report = json.loads(Path(result.run.file("report.json")).read_text())
    picks: dict = {}
    for label in ("A", "B"):
        mine = [r for r in rows if r["model"] == label]
        groups: dict = {}
        for r in mine:
            groups.setdefault(r["group"], []).append(r)
        assert len(groups) == 12 and {len(g) for g in groups.values()} == {5}
        picks[label] = {}
        for g, cands in groups.items():
            (picked,) = [c for c in cands if c["picked"]]
            assert picked["score"] == max(c["score"] for c in cands)
            picks[label][g] = picked
        b = report["models"][label]["best_of_n"]
        assert b["prompts"] == 12
        assert b["quality"] == pytest.approx(sum(p["quality"] for p in picks[label].values()) / 12)
        assert b["ceiling"] == pytest.approx(sum(max(c["quality"] for c in g) for g in groups.values()) / 12)
        gpt4 = {g: next(c for c in cands if c["source"] == "gpt4") for g, cands in groups.items()}
        won = [1.0 if picks[label][g]["quality"] > gpt4[g]["quality"] else 0.0
               if picks[label][g]["quality"] < gpt4[g]["quality"] else 0.5 for g in groups]  # fmt: skip
        assert b["win_rate"]["source gpt4"]["rate"] == pytest.approx(sum(won) / 12)
    # the second model is also compared with the first model's picks
    vs_a = report["models"]["B"]["best_of_n"]["win_rate"]["model A"]
    won = [1.0 if picks["B"][g]["quality"] > picks["A"][g]["quality"] else 0.0
           if picks["B"][g]["quality"] < picks["A"][g]["quality"] else 0.5 for g in picks["A"]]  # fmt: skip
    assert vs_a["rate"] == pytest.approx(sum(won) / 12)
    assert "model A" not in report["models"]["A"]["best_of_n"]["win_rate"]
    assert "## Best-of-N" in Path(result.run.file("report.md")).read_text()


# UltraFeedback eval rows for the rewrites' test: two whose answers both change in the simulated
# round trip, one with a chosen answer over rewrites.max_chars (500), one whose chosen answer comes
# back from the round trip as it was, and one past rewrites.limit (4)
REWRITE_ROWS = (3, 17, 16, 13, 18)


def test_paraphrase_and_back_translation_go_through_committed_oracle_runs(
    tmp_path, ray_cluster, models, samples
):
    from pydantic import SecretStr

    from crome_ray.evaluate.rewrites import answer_id
    from crome_ray.oracle.simulated_tasks import from_pivot, paraphrase, to_pivot
    from crome_ray.oracle.simulator import RunningSimulator, SimConfig
    from crome_ray.storage import RunFolder

    source = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    rows = [{"prompt": source[i]["prompt"], "chosen": source[i]["chosen"], "rejected": source[i]["rejected"],
             "subset": "rewrites", "id": f"r{i}"} for i in REWRITE_ROWS]  # fmt: skip
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def round_trip(text: str) -> str:
        return from_pivot(to_pivot(text, "French"), "French")

    # what the simulator answers, from its own functions: a variant only where both answers changed
    expected: dict = {"paraphrase": {}, "back_translation": {}}
    for r in rows[:4]:
        if max(len(r["chosen"]), len(r["rejected"])) > 500:
            continue
        for name, fn in (("paraphrase", paraphrase), ("back_translation", round_trip)):
            new = (fn(r["chosen"]).strip(), fn(r["rejected"]).strip())
            if new[0] != r["chosen"].strip() and new[1] != r["rejected"].strip():
                expected[name][r["id"]] = new
    assert len(expected["paraphrase"]) == 3 and len(expected["back_translation"]) == 2  # the rows' design

    logs: list[str] = []
    with RunningSimulator(SimConfig(latency_median_s=0.01)) as sim:
        cfg = load_config(
            EvaluateConfig,
            None,
            [f"models=[{models[0]}]", "labels=[A]", f"data={data}", f"storage.root={tmp_path}/runs",
             "transformations=[rot13]", "cue.enabled=false", "best_of_n.enabled=false",
             f"scoring.max_length={MAX_LENGTH}", "rewrites.enabled=true", "rewrites.limit=4",
             "rewrites.max_chars=500", f"rewrites.oracle.base_url={sim.url}", "rewrites.workers=1",
             "rewrites.oracle.retry.timeout_s=10"],
        )  # fmt: skip
        result = run_evaluate_job(cfg, log=logs.append, api_key=SecretStr("sim-key"))
        first = sim.stats.summary()
        ledgers = {p: p.read_bytes() for p in (tmp_path / "runs" / "oracle").glob("*.ledger.json")}
        again = run_evaluate_job(cfg, log=logs.append, api_key=SecretStr("sim-key"))
        second = sim.stats.summary()

    # pass 1: a paraphrase and a first leg per distinct answer sent (3 pairs x 2; the pair with a
    # long answer sends neither); pass 2: the return leg of each; every call answered once, nothing
    # called again by the second run
    short = [r for r in rows[:4] if max(len(r["chosen"]), len(r["rejected"])) <= 500]
    sent = {answer_id(t) for r in short for t in (r["chosen"], r["rejected"])}
    assert len(sent) == 6 and first["answered"] == first["requests"] == 3 * 6 and first["answered_twice"] == 0
    assert again.skipped and again.run.uri == result.run.uri
    assert second["requests"] == first["requests"] and second["model_gets"] == first["model_gets"]
    assert ledgers and all(p.read_bytes() == b for p, b in ledgers.items())

    # the oracle runs are committed, and named as the evaluation's inputs and in its report
    report = json.loads(Path(result.run.file("report.json")).read_text())
    inputs = result.manifest["inputs"]
    assert {k for k in inputs if k.startswith("oracle:")} == {"oracle:rewrites1", "oracle:rewrites2"}
    assert {r["uri"] for r in report["rewrites"]["oracle_runs"].values()} == {
        inputs["oracle:rewrites1"]["uri"],
        inputs["oracle:rewrites2"]["uri"],
    }
    for key, n in (("oracle:rewrites1", 12), ("oracle:rewrites2", 6)):
        run = RunFolder.from_uri(inputs[key]["uri"])
        assert run.is_committed() and run.read_table("responses").num_rows == n
    assert report["rewrites"]["transformations"] == {
        "paraphrase": {"pairs": 4, "variants": 3, "skipped": {"too_long": 1}},
        "back_translation": {"pairs": 4, "variants": 2, "skipped": {"too_long": 1, "unchanged": 1}},
    }
    assert "## Rewritten by the oracle" in Path(result.run.file("report.md")).read_text()

    # the texts scored are the simulator's rewrites, not the originals (rows are named by their
    # source id in the data run's pairs, the evaluation's tables by pair_id)
    (data_key,) = [k for k in inputs if k.startswith("data:")]
    pairs = RunFolder.from_uri(inputs[data_key]["uri"]).read_table("pairs").to_pylist()
    pid = {p["source_id"]: p["pair_id"] for p in pairs}
    expected = {name: {pid[src]: texts for src, texts in got.items()} for name, got in expected.items()}
    table = result.run.read_table("rewrites").to_pylist()
    made = {
        (r["transformation"], r["pair_id"]): (r["chosen"], r["rejected"]) for r in table if not r["skipped"]
    }
    assert made == {(name, pid): texts for name, got in expected.items() for pid, texts in got.items()}
    scores = result.run.read_table("scores").to_pylist()
    original = {r["pair_id"]: r for r in scores if r["variant"] == "original"}
    assert len(original) == 5
    scorer = RewardScorer(str(models[0]), max_length=MAX_LENGTH, device="cpu")
    prompts = {pid[r["id"]]: r["prompt"] for r in rows}
    m = report["models"]["A"]["transformations"]
    for name, got in expected.items():
        mine = [r for r in scores if r["variant"] == name]
        assert {r["pair_id"] for r in mine} == set(got)
        for r in mine:
            c, j = scorer.score([prompts[r["pair_id"]]] * 2, list(got[r["pair_id"]]))
            assert (r["score_chosen"], r["score_rejected"]) == pytest.approx((c, j), abs=1e-4)
            assert r["score_chosen"] != original[r["pair_id"]]["score_chosen"]
        # in the report: accuracy and (both are meaning-preserving) the reward shift over both answers
        assert m[name]["pairs"] == len(mine)
        assert m[name]["accuracy"] == pytest.approx(sum(r["outcome"] for r in mine) / len(mine))
        assert m[name]["shift"]["n"] == 2 * len(mine)
        after = [s for r in mine for s in (r["score_chosen"], r["score_rejected"])]
        before = [
            s
            for r in mine
            for s in (original[r["pair_id"]]["score_chosen"], original[r["pair_id"]]["score_rejected"])
        ]
        assert m[name]["shift"]["mean"] == pytest.approx((sum(after) - sum(before)) / len(after))


def test_rm_bench_and_rewardbench2_files_are_scored_by_their_own_rules(tmp_path, ray_cluster, models):
    from typer.testing import CliRunner

    from crome_ray.cli import app
    from crome_ray.evaluate.benchmarks import rewardbench2, rm_bench
    from crome_ray.storage import RunFolder

    fixtures = Path(__file__).parent / "fixtures" / "benchmarks"
    res = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(models[0]), "--label", "A", "--data", str(fixtures / "rm_bench"),
         "--data", str(fixtures / "rewardbench2.jsonl"), "--output", str(tmp_path), "transformations=[]",
         "cue.enabled=false", "best_of_n.enabled=false", f"scoring.max_length={MAX_LENGTH}"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "RewardBench 2 (its rule)" in res.output and "RM-Bench (its rule, average)" in res.output
    report = Path(res.output.split("report:", 1)[1].split()[0])
    doc = json.loads(report.with_name("report.json").read_text())
    got = doc["models"]["A"]["benchmarks"]
    # the same figures again, from the scores table and the ingested pairs' groups
    run = RunFolder.from_uri(str(report.parent.parent.parent))
    scores = {(r["dataset"], r["pair_id"]): r for r in run.read_table("scores").to_pylist()}
    rows = []
    for d in doc["data"]:
        for p in RunFolder.from_uri(d["uri"]).read_table("pairs").to_pylist():
            s = scores[d["name"], p["pair_id"]]
            rows.append((json.loads(p["metadata"]), p["subset"], s["score_chosen"], s["score_rejected"]))
    assert got["rewardbench2"] == rewardbench2(rows) and got["rm_bench"] == rm_bench(rows)
    assert set(got["rewardbench2"]["subsets"]) == {"Factuality", "Precise IF", "Ties"}
    assert (
        set(got["rm_bench"]["domains"]) == {"chat", "safety"} and got["rm_bench"]["incomplete_prompts"] == []
    )
    md = report.read_text()
    assert "## RewardBench 2" in md and "## RM-Bench" in md and "Domains not in the data: code, math" in md
