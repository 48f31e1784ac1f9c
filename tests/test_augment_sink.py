"""The table sinks: the stream's records reach their tables through actors, and the driver gets
only each block's tally, which adds up to what the files hold."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crome_ray.augment.flow import Answer
from crome_ray.augment.job import TABLES
from crome_ray.augment.kinds import GATED
from crome_ray.augment.sink import TableSink, block_key
from crome_ray.augment.stages import records_table
from crome_ray.augment.tally import Tally
from crome_ray.config import StorageConfig
from crome_ray.records import AUGMENTED_PAIR_SCHEMA, QUARANTINE_SCHEMA
from crome_ray.runs import Step
from crome_ray.storage import RunFolder
from tests.augment_examples import mid_sized_example
from tests.test_augment_flow import OTHER, Oracle, run


def broke(t):
    if t.kind == "rubric":
        return Answer(error="budget_exhausted", detail="over the cap", backend="gemini", model="sim")
    return None


@pytest.fixture(scope="module")
def records(samples):
    """Two examples' records as the oracle stage sends them: one whole (with control probes), one
    whose rubric call was refused (a quarantine row)."""
    whole = run(mid_sized_example(samples, "ex1"), Oracle(), other=OTHER, control=True)
    refused = run(mid_sized_example(samples, "ex2"), Oracle(override=broke), other=OTHER)
    out = []
    for sid, rec in (("ex1", whole), ("ex2", refused)):
        out += [(t, sid, r) for t, r in rec.rows]
        out.append(("stats", sid, dict(rec.stats)))
    return out


def sink_at(tmp_path, rows_per_file=1000):
    attempt = RunFolder.at(str(tmp_path), "augment", "r").new_attempt("fp")
    return TableSink(attempt.uri, StorageConfig().model_dump_json(), TABLES, rows_per_file, "s0"), attempt


def read(attempt, files):
    return pa.concat_tables([pq.read_table(attempt.file(f)) for f in files]).to_pylist()


def test_a_sink_writes_each_record_to_its_table_and_returns_the_blocks_tally(tmp_path, records):
    sink, attempt = sink_at(tmp_path)
    batch = records_table(records)
    doc = json.loads(sink.write(block_key(batch), batch))
    written = sink.close()["tables"]

    expected = {name: [r for t, _, r in records if t == name] for name in TABLES}
    assert {name for name, rows in expected.items() if rows} == set(written)  # no files for empty tables
    assert expected["pairs"] and expected["quarantine"] and expected["controls"]
    gated = sorted({r["kind"] for r in expected["pairs"]} & set(GATED))
    assert gated and sorted(written["pairs"]["kinds"]) == gated  # each oracle-written kind: files of its own
    for kind in gated:
        part = written["pairs"]["kinds"][kind]
        assert part["files"] == [f"pairs/part-s0-{kind}-00000.parquet"]
        assert [r["kind"] for r in read(attempt, part["files"])] == [kind] * part["rows"]
    for name, entry in written.items():
        kinds = [f for part in entry["kinds"].values() for f in part["files"]]
        assert sorted(entry["files"]) == sorted([f"{name}/part-s0-00000.parquet", *kinds])
        assert entry["rows"] == len(expected[name])
        rows = read(attempt, entry["files"])
        assert len(rows) == len(expected[name])
        assert pq.read_schema(attempt.file(entry["files"][0])) == TABLES[name]
    pairs = read(attempt, written["pairs"]["files"])
    assert sorted(p["pair_id"] for p in pairs) == sorted(r["pair_id"] for r in expected["pairs"])
    assert sorted(p["chosen"] for p in pairs) == sorted(r["chosen"] for r in expected["pairs"])
    (q,) = read(attempt, written["quarantine"]["files"])
    assert (q["source"], q["source_id"], q["reason"], q["location"]) == (
        "augment", "ex2", "budget_exhausted", "ex2/rubric"
    )  # fmt: skip
    assert doc["tables"] == dict(Counter(t for t, _, _ in records))
    assert doc["tables"]["stats"] == doc["examples"] == 2
    assert doc["kinds"] == {
        k: sum(r["kind"] == k for r in expected["pairs"]) for k in {r["kind"] for r in expected["pairs"]}
    }
    assert doc["quarantine"] == {"budget_exhausted": 1}
    assert len(doc["leaks"]) == sum(bool(r["leakage"]) for r in expected["pairs"]) > 0


def test_a_block_that_comes_twice_is_written_once(tmp_path, records):
    sink, attempt = sink_at(tmp_path)
    batch = records_table(records)
    first = sink.write(block_key(batch), batch)
    again = sink.write(block_key(batch), batch)  # a retried task that had already reached the sink
    out = sink.close()
    assert again == first and out["repeats"] == 1
    pairs = [r for t, _, r in records if t == "pairs"]
    assert out["tables"]["pairs"]["rows"] == len(pairs) == len(read(attempt, out["tables"]["pairs"]["files"]))


def test_a_blocks_key_changes_with_any_of_its_records(records):
    batch = records_table(records)
    assert block_key(records_table(list(records))) == block_key(batch)
    t, sid, row = records[0]
    assert block_key(records_table(records[1:])) != block_key(batch)  # a record fewer
    assert block_key(records_table([(t, "other", row), *records[1:]])) != block_key(batch)
    assert block_key(records_table([("rejected", sid, row), *records[1:]])) != block_key(batch)
    # another pair of the same request, under the same source id: another block
    assert block_key(records_table([(t, sid, {**row, "pair_id": "p2"}), *records[1:]])) != block_key(batch)


def test_two_blocks_of_the_same_source_ids_are_both_written(tmp_path, records):
    """A source may hold several pairs of one request under one source id."""
    sink, _ = sink_at(tmp_path)
    first = records_table(records)
    second = records_table([(t, sid, {**r, "pair_id": f"{r.get('pair_id')}-2"}) for t, sid, r in records])
    sink.write(block_key(first), first)
    sink.write(block_key(second), second)
    out = sink.close()
    n = sum(t == "pairs" for t, _, _ in records)
    assert out["repeats"] == 0 and out["tables"]["pairs"]["rows"] == 2 * n


def test_a_table_past_rows_per_file_goes_on_in_the_next_file(tmp_path, records):
    sink, attempt = sink_at(tmp_path, rows_per_file=2)
    batch = records_table(records)
    sink.write(block_key(batch), batch)
    entry = sink.close()["tables"]["pairs"]
    kinds = Counter(r["kind"] for t, _, r in records if t == "pairs")
    files = sum(-(-n // 2) for k, n in kinds.items() if k in GATED) + -(
        -sum(n for k, n in kinds.items() if k not in GATED) // 2
    )
    assert len(entry["files"]) == files and len(read(attempt, entry["files"])) == kinds.total()


def test_block_tallies_merged_give_the_tally_of_the_whole_stream(records):
    whole = Tally()
    for t, _, r in records:
        whole.add(t, r)
    merged = Tally()
    for lo in range(0, len(records), 5):  # blocks of five records
        block = Tally(sample=None)
        for t, _, r in records[lo : lo + 5]:
            block.add(t, r)
        merged.merge(json.loads(json.dumps(block.as_doc())))
    a, b = merged.as_doc(), whole.as_doc()
    assert a.pop("cost_usd") == pytest.approx(b.pop("cost_usd")) and a == b
    assert merged.false_pass_rate() == whole.false_pass_rate() is not None


def test_the_drivers_tally_keeps_a_fixed_uniform_sample_of_the_leakage_values():
    """1,000 blocks of one distinct value each into a sample of 100: the sample keeps its size
    and draws from the whole stream (a reservoir that stopped replacing once full would hold
    only the first 100; one that always replaced, only the last)."""
    leak = {"length_ratio": 1.0, "markdown_delta": 0, "format_changed": False, "lexical_overlap": 0.5}
    empty = Tally(sample=None).as_doc()
    driver = Tally(sample=100)
    for i in range(1000):
        driver.merge({**empty, "leaks": [{**leak, "length_ratio": float(i)}]})
    kept = sorted(x.length_ratio for x in driver.leaks)
    assert len(kept) == 100 == len(set(kept))
    assert sum(v < 500 for v in kept) > 25 and sum(v >= 500 for v in kept) > 25


def adopt(tmp_path, reported_rows, counted_rows, extra_file=None):
    """``_adopt_tables`` on one sink's report of a pairs file of ``reported_rows`` rows, after the
    stream counted ``counted_rows``."""
    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.job import _adopt_tables

    step = Step("augment", "r", AugmentConfig(storage=StorageConfig(root=str(tmp_path))))
    assert step.begin()
    folder = step.folder
    folder.fs.makedirs(folder.file("pairs"), exist_ok=True)
    for name in ["part-s0-00000.parquet", *([extra_file] if extra_file else [])]:
        pq.write_table(pa.Table.from_pylist([], schema=AUGMENTED_PAIR_SCHEMA), folder.file("pairs", name))
    tally = Tally()
    tally.tables["pairs"] = counted_rows
    written = [{"tables": {"pairs": {"files": ["pairs/part-s0-00000.parquet"], "rows": reported_rows}}}]
    _adopt_tables(step, written, tally)
    return step.commit({}).manifest["tables"]


def test_the_driver_commits_the_sinks_files_only_when_they_hold_what_it_counted(tmp_path):
    from crome_ray.augment.errors import AugmentError

    tables = adopt(tmp_path / "ok", 7, 7)
    assert tables["pairs"] == {"files": ["pairs/part-s0-00000.parquet"], "rows": 7}
    assert tables["rejected"] == {"files": ["rejected/part-00000.parquet"], "rows": 0}  # empty: schema only
    with pytest.raises(AugmentError, match="wrote 7 rows of pairs but the stream counted 9"):
        adopt(tmp_path / "short", 7, 9)
    with pytest.raises(AugmentError, match=r"part-s9-00000\.parquet"):  # a file no sink reported
        adopt(tmp_path / "stray", 7, 7, extra_file="part-s9-00000.parquet")


def test_a_step_lists_tables_others_wrote_and_gives_an_empty_one_its_schema(tmp_path):
    from crome_ray.augment.config import AugmentConfig

    cfg = AugmentConfig(storage=StorageConfig(root=str(tmp_path)))
    step = Step("augment", "r", cfg)
    assert step.begin()
    step.folder.fs.makedirs(step.folder.file("pairs"), exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist([], schema=AUGMENTED_PAIR_SCHEMA),
        step.folder.file("pairs/part-s0-00000.parquet"),
    )
    step.written_table("pairs", AUGMENTED_PAIR_SCHEMA, ["pairs/part-s0-00000.parquet"], 0)
    step.written_table("quarantine", QUARANTINE_SCHEMA, [], 0)
    result = step.commit({})
    tables = result.manifest["tables"]
    assert tables["pairs"] == {"files": ["pairs/part-s0-00000.parquet"], "rows": 0}
    assert tables["quarantine"] == {"files": ["quarantine/part-00000.parquet"], "rows": 0}
    assert result.run.read_table("quarantine").schema == QUARANTINE_SCHEMA


def test_a_kind_the_gate_leaves_out_moves_whole_from_pairs_to_left_out_before_the_commit(tmp_path, records):
    from crome_ray.augment.config import AugmentConfig
    from crome_ray.augment.job import _adopt_tables

    step = Step("augment", "r", AugmentConfig(storage=StorageConfig(root=str(tmp_path))))
    assert step.begin()
    sink = TableSink(step.folder.uri, StorageConfig().model_dump_json(), TABLES, 1000, "s0")
    batch = records_table(records)
    tally = Tally()
    tally.merge(json.loads(sink.write(block_key(batch), batch)))
    moved = _adopt_tables(step, [sink.close()], tally, ["neutral_can", "neutral_para"])
    result = step.commit(tally.counts(2, 2, moved))

    pairs = [r for t, _, r in records if t == "pairs"]
    assert moved == {k: sum(r["kind"] == k for r in pairs) for k in ("neutral_can", "neutral_para")}
    kept = result.run.read_table("pairs").to_pylist()
    left = result.run.read_table("left_out").to_pylist()
    assert {r["kind"] for r in left} == {"neutral_can", "neutral_para"}
    assert not {"neutral_can", "neutral_para"} & {r["kind"] for r in kept}
    assert sorted(r["pair_id"] for r in kept + left) == sorted(r["pair_id"] for r in pairs)  # nothing lost
    counts = result.manifest["counts"]
    assert counts["pairs"] == len(kept) and counts["left_out"] == len(left) == sum(moved.values())
    assert "pairs_neutral_can" not in counts and counts["left_out_neutral_can"] == moved["neutral_can"]
    assert result.manifest["tables"]["left_out"]["files"] == [
        "left_out/part-s0-neutral_can-00000.parquet", "left_out/part-s0-neutral_para-00000.parquet"
    ]  # fmt: skip
