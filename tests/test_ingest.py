"""Ingest of the real sample data sets into committed run folders."""

import json
import unicodedata
from pathlib import Path

import pytest

from crome_ray.config import load_config
from crome_ray.data.config import IngestConfig
from crome_ray.data.ingest import IngestError, default_run_name, run_ingest
from crome_ray.storage import RunFolder


def cfg_for(tmp_path, *overrides):
    return load_config(IngestConfig, None, [f"storage.root={tmp_path}", *overrides])


def expected_ultrafeedback(path):
    """Counted independently of the loader: plain json over the sample file."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    ties = identical = empty = 0

    def blank(text):  # nothing visible: only separators and control or format characters
        return not any(not unicodedata.category(ch).startswith(("Z", "C")) for ch in text)

    for r in rows:
        if blank(r["chosen"]) or blank(r["rejected"]):
            empty += 1
        elif r["chosen"].strip() == r["rejected"].strip():
            identical += 1
        elif r["metadata"]["score_chosen"] == r["metadata"]["score_rejected"]:
            ties += 1
    return len(rows), ties, identical, empty


def test_ultrafeedback_sample_with_ties_dropped(tmp_path, samples):
    path = samples / "ultrafeedback" / "train_1k.jsonl"
    n, ties, identical, empty = expected_ultrafeedback(path)
    result = run_ingest(cfg_for(tmp_path, f"source.path={path}"))
    c = result.counts
    assert (c["records_read"], c["ties_dropped"], c["ties_kept"]) == (n, ties, 0)
    assert c["quarantined_by_reason"] == {"identical_responses": identical, "empty_field": empty}
    assert c["pairs_written"] == n - ties - identical - empty
    pairs = RunFolder.from_uri(result.run.uri).read_table("pairs")
    assert pairs.num_rows == c["pairs_written"]
    assert set(pairs.column("label").to_pylist()) == {"chosen"}
    assert len(set(pairs.column("pair_id").to_pylist())) == pairs.num_rows


def test_ultrafeedback_sample_with_ties_kept_labels_them_tie(tmp_path, samples):
    path = samples / "ultrafeedback" / "train_1k.jsonl"
    n, ties, identical, empty = expected_ultrafeedback(path)
    result = run_ingest(cfg_for(tmp_path, f"source.path={path}", "source.ties=keep"))
    pairs = RunFolder.from_uri(result.run.uri).read_table("pairs").to_pylist()
    tie_rows = [p for p in pairs if p["label"] == "tie"]
    assert len(tie_rows) == ties == result.counts["ties_kept"]
    assert all(p["score_chosen"] == p["score_rejected"] for p in tie_rows)
    assert result.counts["pairs_written"] == n - identical - empty


def test_a_second_run_with_the_same_config_skips_and_a_forced_one_redoes(tmp_path, samples):
    cfg = cfg_for(tmp_path, f"source.path={samples / 'ultrafeedback' / 'eval_200.jsonl'}")
    first = run_ingest(cfg)
    marker = Path(first.run.path) / "_COMMITTED"
    stamp = marker.read_text()
    again = run_ingest(cfg)
    assert again.skipped and again.manifest == first.manifest and marker.read_text() == stamp
    assert first.run.uri.endswith(default_run_name(cfg))
    forced = run_ingest(cfg, force=True)
    assert not forced.skipped and forced.counts == first.counts


def test_limit_stops_after_that_many_pairs(tmp_path, samples):
    cfg = cfg_for(
        tmp_path,
        f"source.path={samples / 'ultrafeedback' / 'train_1k.jsonl'}",
        "source.limit=50",
        "rows_per_file=20",
    )
    result = run_ingest(cfg)
    assert result.counts["pairs_written"] == 50
    assert result.manifest["tables"]["pairs"] == {
        "files": [f"pairs/part-0000{i}.parquet" for i in range(3)],
        "rows": 50,
    }


def test_llmbar_natural(tmp_path, samples):
    path = samples / "eval" / "llmbar_natural" / "dataset.json"
    raw = json.loads(path.read_text())
    result = run_ingest(
        cfg_for(tmp_path, f"source.path={path}", "source.format=llmbar", "source.subset=llmbar-natural")
    )
    pairs = RunFolder.from_uri(result.run.uri).read_table("pairs").to_pylist()
    assert len(pairs) == len(raw) == 100
    first = raw[0]
    better = first["output_1"] if first["label"] == 1 else first["output_2"]
    assert pairs[0]["chosen"] == better and pairs[0]["subset"] == "llmbar-natural"


def test_xstest_pairs_from_the_five_completion_files(tmp_path, samples):
    import csv

    result = run_ingest(
        cfg_for(tmp_path, f"source.path={samples / 'eval' / 'xstest'}", "source.format=xstest")
    )
    pairs = RunFolder.from_uri(result.run.uri).read_table("pairs").to_pylist()
    # independent count: prompts with at least one full compliance and one full refusal
    labels: dict[str, set] = {}
    for f in sorted((samples / "eval" / "xstest").glob("xstest_v2_completions_*.csv")):
        for row in csv.DictReader(f.read_text().splitlines()):
            labels.setdefault(row["id"].removeprefix("v2-"), set()).add(row["final_label"])
    pairable = sum({"1_full_compliance", "2_full_refusal"} <= s for s in labels.values())
    assert len(pairs) == pairable and result.counts["unpaired"] == 450 - pairable
    subsets = {p["subset"] for p in pairs}
    assert subsets == {"xstest-should-respond", "xstest-should-refuse"}
    refuse = next(p for p in pairs if p["subset"] == "xstest-should-refuse")
    assert refuse["metadata"] and json.loads(refuse["metadata"])["type"].startswith("contrast")


@pytest.mark.parametrize("fmt", ["pairs", "auto"])
def test_reading_our_own_parquet_back_gives_the_same_pairs(tmp_path, samples, fmt):
    first = run_ingest(cfg_for(tmp_path, f"source.path={samples / 'ultrafeedback' / 'eval_200.jsonl'}"))
    pairs_dir = first.output.uri_of("pairs")
    again = run_ingest(
        cfg_for(
            tmp_path / "b", f"source.path={pairs_dir}", f"source.format={fmt}", "source.name=ultrafeedback"
        )
    )
    a = RunFolder.from_uri(first.run.uri).read_table("pairs").to_pylist()
    b = RunFolder.from_uri(again.run.uri).read_table("pairs").to_pylist()
    assert [r["pair_id"] for r in a] == [r["pair_id"] for r in b]
    assert a == b


# --- fields that change a row's meaning are read, or refused: never dropped -------------------


def tie_labelled_rows(samples, n=20):
    """IQN-style rows as a new user writes them: prompt/chosen/rejected plus label and kind,
    without pair_id or schema_version; every other one a tie."""
    rows = [json.loads(x) for x in (samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()]
    out = []
    for i, r in enumerate(x for x in rows if x["chosen"].strip() and x["rejected"].strip()):
        if len(out) == n:
            break
        tie = i % 2 == 0
        out.append(
            {
                "prompt": r["prompt"],
                "chosen": r["chosen"],
                "rejected": r["rejected"],
                "label": "tie" if tie else "chosen",
                **({"kind": "neutral_iqn"} if tie else {}),
            }
        )
    return out


def write_rows(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
@pytest.mark.parametrize("fmt", ["auto", "pairs"])
def test_a_tie_labelled_file_keeps_its_ties_in_every_format_that_reads_labels(tmp_path, samples, ext, fmt):
    rows = tie_labelled_rows(samples)
    source = write_rows(tmp_path / f"ties.{ext}", rows, ext)
    result = run_ingest(cfg_for(tmp_path / "runs", f"source.path={source}", f"source.format={fmt}"))
    pairs = RunFolder.from_uri(result.run.uri).read_table("pairs").to_pylist()
    assert result.counts["ties_kept"] == sum(r["label"] == "tie" for r in rows) == 10
    assert [p["label"] for p in pairs] == [r["label"] for r in rows]
    assert [p["kind"] for p in pairs] == [r.get("kind", "original") for r in rows]


@pytest.mark.parametrize("field", ["label", "kind"])
@pytest.mark.parametrize("fmt", ["ultrafeedback_binarized", "rewardbench"])
def test_a_format_that_would_drop_a_meaningful_field_is_refused_naming_the_field_and_the_reader(
    tmp_path, samples, fmt, field
):
    rows = [{**r, "subset": "chat"} for r in tie_labelled_rows(samples)]
    if field == "kind":
        rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    source = write_rows(tmp_path / "ties.jsonl", rows, "jsonl")
    cfg = cfg_for(tmp_path / "runs", f"source.path={source}", f"source.format={fmt}", "run_name=x")
    with pytest.raises(
        IngestError, match=rf"field '{field}' .* format '{fmt}' does not read it.*source.format=pairs"
    ):
        run_ingest(cfg)
    assert not RunFolder.at(str(tmp_path / "runs"), "ingest", "x").is_committed()


def test_a_label_that_means_what_the_format_assumes_is_not_an_error(tmp_path, samples):
    rows = [{**r, "label": "chosen"} for r in tie_labelled_rows(samples)]
    rows = [{k: v for k, v in r.items() if k != "kind"} for r in rows]
    source = write_rows(tmp_path / "plain.jsonl", rows, "jsonl")
    result = run_ingest(
        cfg_for(tmp_path / "runs", f"source.path={source}", "source.format=ultrafeedback_binarized")
    )
    assert result.counts["pairs_written"] == 20 and result.counts["ties_kept"] == 0


def test_a_source_read_with_format_auto_is_named_after_its_file(tmp_path, samples):
    from crome_ray.data.config import SourceConfig
    from crome_ray.data.ingest import source_name

    assert source_name(SourceConfig(path="s3://b/sets/my_heldout.jsonl.gz", format="auto")) == "my_heldout"
    assert source_name(SourceConfig(path="data/rm_bench/", format="auto")) == "rm_bench"
    assert source_name(SourceConfig(path="x.jsonl", format="llmbar")) == "llmbar"
    assert source_name(SourceConfig(path="x.jsonl", format="auto", name="mine")) == "mine"
    path = samples / "ultrafeedback" / "eval_200.jsonl"
    result = run_ingest(cfg_for(tmp_path, f"source.path={path}", "source.format=auto", "source.limit=5"))
    assert result.run.name.startswith("eval_200-")
    assert set(result.run.read_table("pairs").column("source").to_pylist()) == {"eval_200"}
