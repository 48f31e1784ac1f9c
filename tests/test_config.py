"""Job configs: typed, frozen, loaded from YAML, overridden as key.sub=value, loud when wrong."""

from pathlib import Path

import pydantic
import pytest

from crome_ray.config import (
    ConfigError,
    IngestConfig,
    OracleJobConfig,
    TrainConfig,
    load_config,
    load_job_config,
    parse_override,
)

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(SHIPPED) >= 3


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_job_config(path)
    assert cfg.job == path.read_text().split("job:", 1)[1].split()[0]


def test_overrides_reach_nested_fields_and_are_typed_as_yaml():
    cfg = load_config(
        IngestConfig,
        None,
        [
            "source.limit=10",
            "source.binarize.rejected=lowest",
            "storage.root=s3://b/p",
            "source.ties=keep",
        ],
    )
    assert cfg.source.limit == 10 and isinstance(cfg.source.limit, int)
    assert cfg.source.binarize.rejected == "lowest"
    assert cfg.storage.root == "s3://b/p"
    assert cfg.source.ties == "keep"


def test_overrides_win_over_the_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("job: ingest\nsource:\n  limit: 5\n  ties: keep\n")
    cfg = load_config(IngestConfig, f, ["source.limit=7"])
    assert cfg.source.limit == 7 and cfg.source.ties == "keep"


def test_a_bad_choice_names_the_field_and_the_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(IngestConfig, None, ["source.format=csv"])
    msg = str(e.value)
    assert "source.format" in msg and "'ultrafeedback_binarized'" in msg and "'csv'" in msg


def test_an_out_of_range_number_names_the_field():
    with pytest.raises(ConfigError, match=r"source.limit: Input should be greater than 0"):
        load_config(IngestConfig, None, ["source.limit=0"])


def test_an_unknown_key_lists_the_known_ones_and_a_close_match():
    with pytest.raises(ConfigError) as e:
        load_config(IngestConfig, None, ["source.formt=llmbar"])
    msg = str(e.value)
    assert "did you mean 'format'" in msg and "path" in msg and "max_text_chars" in msg


def test_an_unknown_key_in_yaml_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("job: ingest\nsorce:\n  path: x\n")
    with pytest.raises(ConfigError, match="sorce: Extra inputs are not permitted"):
        load_config(IngestConfig, f)


def test_a_malformed_override_is_refused():
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        parse_override("source.limit")


def test_a_yaml_without_a_known_job_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("source: {}\n")
    with pytest.raises(ConfigError, match="job: <name>"):
        load_job_config(f)


def test_configs_are_frozen():
    cfg = IngestConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.source.limit = 3  # type: ignore[misc]


def test_fingerprint_follows_what_changes_the_output_not_where_it_goes():
    base = IngestConfig()
    moved = load_config(IngestConfig, None, ["storage.root=s3://elsewhere/x", "run_name=other"])
    changed = load_config(IngestConfig, None, ["source.ties=keep"])
    assert base.fingerprint() == moved.fingerprint()
    assert base.fingerprint() != changed.fingerprint()


@pytest.mark.parametrize("cls", [IngestConfig, OracleJobConfig, TrainConfig])
@pytest.mark.parametrize("bad", ["a/b", "..", "''"])
def test_every_job_refuses_a_run_name_that_is_not_one_folder_name(cls, bad):
    with pytest.raises(ConfigError, match="run_name"):
        load_config(cls, None, [f"run_name={bad}"])
