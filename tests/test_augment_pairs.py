"""The augmented pairs: each kind puts the right texts on the right side with the right label, the
table is read by pandas, pyarrow datasets and HF datasets as it is, and the baseline filter keeps
exactly the pairs where the baseline is uncertain or wrong."""

import json

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from crome_ray.augment import pairs as A
from crome_ray.augment.kinds import BY_NAME, KIND_NAMES
from crome_ray.augment.leakage import leakage
from crome_ray.augment.prompts import Example
from crome_ray.records import AUGMENTED_PAIR_SCHEMA, PAIR_SCHEMA
from crome_ray.train.batches import PairEncoder

EX = Example("src-1", "Why is the sky blue?", "Rayleigh scattering.", "The ocean.")
OTHER = Example("src-2", "How do I bake bread?", "Knead, proof, bake.", "Buy it.")
THIRD = Example("src-3", "Name a prime.", "Seven.", "Nine.")
ORIGIN = A.Origin("gemini", "gemini-2.5-flash", 0.0012, ("k1", "k2"))


def every_kind() -> list[A.AugmentedPair]:
    K = BY_NAME
    return [
        A.original(EX),
        A.rewritten(
            K["causal_degrade"], EX, "Green light.", ORIGIN, leakage(EX.chosen, "Green light."), "accuracy"
        ),
        A.rewritten(
            K["causal_upgrade"],
            EX,
            "The ocean, by reflection.",
            ORIGIN,
            leakage(EX.rejected, "x"),
            "accuracy",
        ),
        A.neutral_iqn(EX, OTHER.question, "least-similar-of-64", -0.12),
        A.rewritten(K["neutral_can"], EX, "Rayleigh, like the ocean.", ORIGIN, leakage(EX.rejected, "y")),
        A.rewritten(K["neutral_para"], EX, "Scattering (Rayleigh).", ORIGIN, leakage(EX.chosen, "z")),
        *A.rrm(EX, OTHER, THIRD, "least-similar-of-64", -0.12),
    ]


def test_each_kind_puts_the_preferred_text_first_or_labels_a_tie():
    rows = {p.kind: p.to_row() for p in every_kind()}
    assert set(rows) == set(KIND_NAMES)
    sides = {k: (r["prompt"], r["chosen"], r["rejected"], r["label"]) for k, r in rows.items()}
    assert sides["original"] == (EX.question, EX.chosen, EX.rejected, "chosen")
    assert sides["causal_degrade"] == (EX.question, EX.chosen, "Green light.", "chosen")
    assert sides["causal_upgrade"] == (EX.question, "The ocean, by reflection.", EX.rejected, "chosen")
    assert sides["neutral_iqn"] == (OTHER.question, EX.chosen, EX.rejected, "tie")
    assert sides["neutral_can"] == (EX.question, EX.chosen, "Rayleigh, like the ocean.", "tie")
    assert sides["neutral_para"] == (EX.question, EX.chosen, "Scattering (Rayleigh).", "tie")
    assert sides["rrm_prefer"] == (EX.question, EX.chosen, OTHER.chosen, "chosen")
    assert sides["rrm_tie"] == (EX.question, OTHER.chosen, THIRD.chosen, "tie")
    assert {r["source_id"] for r in rows.values()} == {"src-1"}  # every pair traces to its source
    assert rows["neutral_iqn"]["iqn_similarity"] == -0.12 and rows["neutral_iqn"]["backend"] is None
    assert (
        rows["causal_degrade"]["request_keys"] == ["k1", "k2"]
        and rows["causal_degrade"]["attribute"] == "accuracy"
    )
    assert json.loads(rows["causal_degrade"]["leakage"])["length_ratio"] == round(12 / 20, 4)


def test_the_table_is_the_pairs_table_plus_lineage_and_every_reader_takes_it(tmp_path):
    assert AUGMENTED_PAIR_SCHEMA.names[: len(PAIR_SCHEMA.names)] == PAIR_SCHEMA.names
    table = pa.Table.from_pylist([p.to_row() for p in every_kind()], schema=AUGMENTED_PAIR_SCHEMA)
    path = tmp_path / "pairs" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    assert pds.dataset(path.parent).to_table().num_rows == 8
    df = pq.read_table(path).to_pandas()
    assert (df["label"] == "tie").sum() == 4 and list(df["request_keys"][1]) == ["k1", "k2"]
    import datasets

    hf = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert hf.num_rows == 8 and set(hf["kind"]) == set(KIND_NAMES)


def test_training_encodes_the_ties_of_the_table_as_ties(chatml_tokenizer):
    from transformers import AutoTokenizer

    table = pa.Table.from_pylist([p.to_row() for p in every_kind()], schema=AUGMENTED_PAIR_SCHEMA)
    batch = {
        k: table.column(k).to_numpy(zero_copy_only=False) for k in ("prompt", "chosen", "rejected", "label")
    }
    enc = PairEncoder(AutoTokenizer.from_pretrained(chatml_tokenizer), 64, is_decoder=True).encode_pairs(
        batch
    )
    assert enc["is_tie"].tolist() == [lbl == "tie" for lbl in table.column("label").to_pylist()]


@pytest.mark.parametrize(
    ("p", "label", "kept"),
    [
        (0.05, "chosen", False),  # the baseline already prefers A firmly: nothing to learn
        (0.25, "chosen", True),  # uncertain
        (0.9, "chosen", True),  # wrong
        (0.5, "tie", False),  # already a tie to the baseline
        (0.65, "tie", False),  # |0.65 - 0.5| = 0.15 <= 0.2
        (0.75, "tie", True),
        (0.2, "tie", True),
    ],
)
def test_the_baseline_filter_keeps_what_the_baseline_gets_wrong_or_is_unsure_of(p, label, kept):
    assert A.keep_after_filter(p, label, 0.2) is kept
