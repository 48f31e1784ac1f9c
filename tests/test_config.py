"""Job configs: typed, frozen, loaded from YAML, overridden as key.sub=value, loud when wrong."""

from pathlib import Path

import pydantic
import pytest

from crome_ray.config import ConfigError, load_config, parse_override
from crome_ray.data.config import IngestConfig
from crome_ray.job_configs import load_job_config
from crome_ray.oracle.config import OracleJobConfig
from crome_ray.train.config import TrainConfig

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


def test_a_local_oracle_gets_local_defaults_unless_the_config_says_otherwise():
    from crome_ray.oracle.config import LOCAL_QUOTA, OracleConfig

    o = OracleConfig(backend="vllm")
    assert o.model == "smollm2" and o.local
    assert o.quota.rpm == LOCAL_QUOTA["rpm"] and o.retry.invalid_output_attempts == 1  # greedy: same answer
    given = OracleConfig(backend="vllm", model="qwen2.5-coder-1.5b", quota={"max_in_flight": 8})
    assert given.model == "qwen2.5-coder-1.5b" and given.quota.max_in_flight == 8
    assert given.quota.rpm == LOCAL_QUOTA["rpm"]  # the rest still local
    assert OracleConfig().quota.rpm == 1_000  # Gemini keeps its own


def test_fallback_oracle_overrides_stay_local():
    from crome_ray.oracle.config import OracleJobConfig

    cfg = load_config(OracleJobConfig, None, ["fallback.oracle.model=qwen2.5-coder-0.5b"])
    assert cfg.fallback.oracle.backend == "vllm" and cfg.fallback.oracle.model == "qwen2.5-coder-0.5b"


def test_local_compute_is_priced_from_the_gpu_hour_and_free_without_one():
    from crome_ray.oracle.config import OracleConfig
    from crome_ray.oracle.pricing import call_cost_micros
    from crome_ray.oracle.protocol import Usage

    free = OracleConfig(backend="vllm").price()
    assert (free.input_per_m, free.output_per_m) == (0.0, 0.0)
    # $3.60 an hour at 1,000 output tokens/s: 3.6M tokens per hour, so $1 per million output tokens
    p = OracleConfig(
        backend="vllm",
        engine={"gpu_hour_usd": "3.60", "priced_output_tokens_per_s": 1000, "tensor_parallel_size": 1},
    ).price()
    assert p.output_per_m == 1.0 and p.input_per_m == 0.1
    assert call_cost_micros(Usage(input_tokens=1_000, output_tokens=1_000), p) == 1_100
    two_gpus = OracleConfig(
        backend="vllm", engine={"gpu_hour_usd": "3.60", "tensor_parallel_size": 2}
    ).price()
    assert two_gpus.output_per_m == 2.0
    # a price given for the model wins (a paid OpenAI-compatible endpoint must have one)
    priced = OracleConfig(
        backend="openai", model="m", prices={"m": {"input_per_m": 5, "output_per_m": 15}}
    ).price()
    assert priced.output_per_m == 15


def test_the_fallback_is_part_of_a_runs_fingerprint_only_when_it_is_on():
    from crome_ray.oracle.config import OracleJobConfig

    base = load_config(OracleJobConfig, None, [])
    off_other_model = load_config(OracleJobConfig, None, ["fallback.oracle.model=qwen2.5-coder-0.5b"])
    on = load_config(OracleJobConfig, None, ["fallback.policy=on_budget"])
    on_other = load_config(OracleJobConfig, None, ["fallback.policy=on_budget", "fallback.oracle.model=m"])
    assert base.fingerprint() == off_other_model.fingerprint()
    assert len({base.fingerprint(), on.fingerprint(), on_other.fingerprint()}) == 3


def test_a_partial_section_keeps_the_rest_of_its_default_where_that_default_is_not_its_class_own(tmp_path):
    from crome_ray.augment.config import AugmentConfig
    from crome_ray.pipeline.config import PipelineConfig

    # the pipeline's evaluation names its models and its source reads format: auto; an override of
    # one field of them keeps the rest (it used to fail: "evaluate.models: Field required")
    cfg = load_config(PipelineConfig, None, ["evaluate.limit=4", "source.limit=10"])
    default = load_config(PipelineConfig)
    assert cfg.evaluate == default.evaluate.model_copy(update={"limit": 4})
    assert cfg.source == default.source.model_copy(update={"limit": 10}) and cfg.source.format == "auto"
    yaml = tmp_path / "p.yaml"
    yaml.write_text("job: pipeline\nsource:\n  limit: 5\n")  # the same from a file
    assert load_config(PipelineConfig, yaml).source.format == "auto"
    # a local fallback's defaults (its quota) stay when only its model is named
    aug = load_config(AugmentConfig, None, ["fallback.oracle.model=qwen2.5-coder-0.5b"])
    assert aug.fallback.oracle.quota == AugmentConfig().fallback.oracle.quota
    # a value given replaces the default's; a list is a value
    assert load_config(PipelineConfig, None, ["evaluate.models=[x]"]).evaluate.models == ["x"]


def test_replace_at_puts_a_section_back_at_its_dotted_path():
    from crome_ray.config import replace_at, section_at
    from crome_ray.pipeline.config import PipelineConfig

    cfg = load_config(PipelineConfig)
    rewrites = cfg.evaluate.rewrites.model_copy(update={"enabled": True})
    new = replace_at(cfg, "evaluate.rewrites", rewrites)
    assert section_at(new, "evaluate.rewrites") is rewrites and new.evaluate.models == cfg.evaluate.models
    assert new.model_copy(update={"evaluate": cfg.evaluate}) == cfg and cfg.evaluate.rewrites.enabled is False
    assert replace_at(cfg, "", new) is new and section_at(cfg, "") is cfg
