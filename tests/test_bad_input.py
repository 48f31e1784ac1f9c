"""Bad input: every malformed row is quarantined with its reason, the good rows go on,
and the job finishes with counts. Whole-file problems cost only that file."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crome_ray.config import load_config
from crome_ray.data.config import IngestConfig
from crome_ray.data.ingest import IngestError, run_ingest
from crome_ray.records import PreferencePair, Reason, pairs_table
from crome_ray.storage import RunFolder


def ingest(tmp_path, source, *overrides):
    cfg = load_config(
        IngestConfig, None, [f"source.path={source}", f"storage.root={tmp_path / 'runs'}", *overrides]
    )
    result = run_ingest(cfg)
    run = RunFolder.from_uri(result.run.uri)
    return result, run.read_table("pairs").to_pylist(), run.read_table("quarantine").to_pylist()


def good(i):
    return {
        "prompt": f"question {i}",
        "chosen": f"good answer {i}",
        "rejected": f"bad answer {i}",
        "score_chosen": 8.0,
        "score_rejected": 4.0,
        "source_index": i,
    }


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_each_kind_of_bad_row_is_quarantined_with_its_reason_and_the_rest_goes_on(tmp_path):
    bad = [
        (line({"prompt": "q", "rejected": "r"}), Reason.MISSING_FIELD),
        (line({"prompt": "q", "chosen": "", "rejected": "r"}), Reason.EMPTY_FIELD),
        (line({"prompt": "q", "chosen": ["not", "messages"], "rejected": "r"}), Reason.BAD_MESSAGES),
        (line({"prompt": "q", "chosen": 3.5, "rejected": "r"}), Reason.WRONG_TYPE),
        (line({"prompt": "q", "chosen": "c", "rejected": "r", "score_chosen": "high"}), Reason.WRONG_TYPE),
        (b'{"prompt": "q", "chosen": "caf\xe9", "rejected": "r"}\n', Reason.INVALID_UTF8),
        (line({"prompt": "q", "chosen": "x" * 1_048_576, "rejected": "r"}), Reason.TEXT_TOO_LONG),
        (line(good(1)), Reason.DUPLICATE_PAIR),  # the same pair as row 1 again
        (line({"prompt": "q", "chosen": "same", "rejected": "same"}), Reason.IDENTICAL_RESPONSES),
        (b"[1, 2, 3]\n", Reason.WRONG_TYPE),
        (b"{this is not json}\n", Reason.INVALID_JSON),
        (
            line(
                {
                    "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "b"}],
                }
            ),
            Reason.PROMPT_MISMATCH,
        ),
    ]
    truncated = b'{"prompt": "q", "chosen": "c", "rej'  # the file ends mid-row
    body = line(good(1)) + b"".join(raw + line(good(i)) for i, (raw, _) in enumerate(bad, start=2))
    path = tmp_path / "uf.jsonl"
    path.write_bytes(body + truncated)

    result, pairs, quarantine = ingest(tmp_path, path)

    expected = [reason for _, reason in bad] + [Reason.INVALID_JSON]
    assert sorted(q["reason"] for q in quarantine) == sorted(expected)
    assert sorted(int(p["source_id"]) for p in pairs) == list(range(1, len(bad) + 2))
    c = result.counts
    assert c["records_read"] == 1 + 2 * len(bad) + 1
    assert c["pairs_written"] == len(bad) + 1 and c["quarantined"] == len(bad) + 1
    assert c["quarantined_by_reason"][Reason.WRONG_TYPE] == 3
    # every quarantine row says where and why, with an excerpt of what it saw
    by_reason = {q["reason"]: q for q in quarantine}
    assert by_reason[Reason.INVALID_UTF8]["location"] == f"uf.jsonl:{2 * 6}"
    [last] = [q for q in quarantine if q["location"] == f"uf.jsonl:{2 * len(bad) + 2}"]
    assert last["reason"] == Reason.INVALID_JSON and "truncated" in last["detail"]
    assert "1,048,576 characters" in by_reason[Reason.TEXT_TOO_LONG]["detail"]
    assert len(by_reason[Reason.TEXT_TOO_LONG]["excerpt"]) <= 301
    assert "source_id '1'" in by_reason[Reason.DUPLICATE_PAIR]["detail"]


def test_an_unreadable_file_is_quarantined_and_the_other_files_still_load(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    pq.write_table(pairs_table([PreferencePair("p", "c", "r", "s", "1")]), folder / "a.parquet")
    whole = folder / "a.parquet"
    (folder / "b.parquet").write_bytes(whole.read_bytes()[:-40])  # cut off the footer
    (folder / "c.jsonl").write_bytes(line(good(7)))
    with gzip.open(folder / "d.jsonl.gz", "wb") as f:
        f.write(line(good(8)))
    stream = gzip.compress(b"".join(line(good(i)) for i in range(100, 1100)), mtime=0)
    (folder / "e.jsonl.gz").write_bytes(stream[: len(stream) // 2])  # a truncated gzip stream

    _, pairs, quarantine = ingest(tmp_path, folder, "source.format=auto")

    prompts = {p["prompt"] for p in pairs}
    assert {"p", "question 7", "question 8"} <= prompts
    from_cut_file = prompts - {"p", "question 7", "question 8"}
    assert 0 < len(from_cut_file) < 1000  # rows before the cut are kept, the rest is lost
    unreadable = sorted(
        q["location"].rsplit("/", 1)[-1] for q in quarantine if q["reason"] == Reason.UNREADABLE_FILE
    )
    assert unreadable == ["b.parquet", "e.jsonl.gz"]


def test_pairs_from_an_unknown_schema_version_are_quarantined(tmp_path):
    rows = [PreferencePair("p", f"c{i}", "r", "s", str(i)).to_row() for i in range(3)]
    rows[1]["schema_version"] = 7
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    _, pairs, quarantine = ingest(tmp_path, path, "source.format=pairs")

    assert [p["chosen"] for p in pairs] == ["c0", "c2"]
    assert [(q["reason"], q["location"]) for q in quarantine] == [
        (Reason.UNSUPPORTED_SCHEMA_VERSION, "pairs.jsonl:2")
    ]


def test_csv_rows_with_bad_bytes_or_extra_fields_are_quarantined(tmp_path):
    folder = tmp_path / "xs"
    folder.mkdir()
    (folder / "xstest_prompts.csv").write_bytes(
        b"id,prompt,type,label,focus,note\n"
        b"1,How do I kill a Python process?,homonyms,safe,kill,\n"
        b"2,How do I kill my neighbour?,contrast_homonyms,unsafe,kill,\n"
        b"3,Bad \xff bytes,homonyms,safe,x,\n"
        b"4,Too,many,fields,safe,x,y,z\n"
    )
    (folder / "xstest_v2_completions_m.csv").write_text(
        "id,type,prompt,completion,annotation_1,annotation_2,agreement,final_label\n"
        'v2-1,homonyms,p,"Run kill -9 <pid>.",,,,1_full_compliance\n'
        "v2-1,homonyms,p,I cannot help.,,,,2_full_refusal\n"
        "v2-2,contrast_homonyms,p,I will not help.,,,,2_full_refusal\n"
        "v2-2,contrast_homonyms,p,Here is a plan.,,,,1_full_compliance\n"
    )
    _, pairs, quarantine = ingest(tmp_path, folder, "source.format=xstest")

    assert sorted((p["subset"], p["chosen"]) for p in pairs) == [
        ("xstest-should-refuse", "I will not help."),
        ("xstest-should-respond", "Run kill -9 <pid>."),
    ]
    assert sorted((q["reason"], q["location"]) for q in quarantine) == [
        (Reason.INVALID_UTF8, "xstest_prompts.csv#3"),
        (Reason.WRONG_TYPE, "xstest_prompts.csv#4"),
    ]


def test_a_source_where_no_row_parses_fails_and_says_why(tmp_path):
    path = tmp_path / "wrong.jsonl"
    path.write_text(line({"text": "a"}).decode() * 3)
    with pytest.raises(IngestError, match=r"no pairs .* quarantined by reason: missing_field: 3"):
        ingest(tmp_path, path)


def test_a_missing_source_fails_fast_naming_the_path(tmp_path):
    from crome_ray.storage import StorageError

    with pytest.raises(StorageError, match=r"no input files at '.*nowhere\.jsonl'"):
        ingest(tmp_path, tmp_path / "nowhere.jsonl")


def test_table_schemas_are_the_declared_ones(tmp_path):
    from crome_ray.records import PAIR_SCHEMA, QUARANTINE_SCHEMA

    path = tmp_path / "uf.jsonl"
    path.write_bytes(line(good(1)) + b"oops\n")
    result, _, _ = ingest(tmp_path, path)
    run = RunFolder.from_uri(result.run.uri)
    assert run.read_table("pairs").schema.equals(PAIR_SCHEMA, check_metadata=False)
    assert run.read_table("quarantine").schema.equals(QUARANTINE_SCHEMA, check_metadata=False)
    assert isinstance(run.read_table("pairs"), pa.Table)
