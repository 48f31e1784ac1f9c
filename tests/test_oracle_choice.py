"""One place picks the oracle: from a config and the environment, who serves the calls, with which
keys, and the one line that tells the user; the same plan every job follows."""

import pytest
from pydantic import SecretStr
from rich.console import Console

from crome_ray.config import ConfigError, load_config
from crome_ray.evaluate.config import EvaluateConfig
from crome_ray.oracle.choice import FALLBACK_KINDS, choose_oracle, plan_oracle
from crome_ray.oracle.config import OracleJobConfig
from crome_ray.pipeline.config import PipelineConfig
from crome_ray.pipeline.job import choose_oracles
from crome_ray.secrets import MissingSecretError
from crome_ray.summaries import print_notice


def oracle_job(*overrides):
    return load_config(OracleJobConfig, None, list(overrides))


def test_with_no_gemini_key_the_local_model_is_the_oracle_and_one_line_says_so():
    cfg, choice = choose_oracle(oracle_job(), environ={})
    assert cfg.fallback.policy == "local_only" and choice.api_key.get_secret_value() == ""
    assert cfg.fingerprint() != oracle_job().fingerprint()  # the run's name says a local model answered
    console = Console(width=400)
    with console.capture() as out:
        print_notice(console, choice.notice)
    line = out.get()
    assert line.count("\n") == 1  # one line
    assert "no key in GEMINI_API_KEY / GOOGLE_API_KEY" in line
    assert "local model smollm2" in line and "SmolLM2-135M-Instruct" in line and "not judgement" in line


def test_a_key_keeps_gemini_and_no_key_fail_refuses_without_one():
    cfg, choice = choose_oracle(oracle_job(), environ={"GOOGLE_API_KEY": "sk-test-0123"})
    assert cfg == oracle_job() and choice.api_key.get_secret_value() == "sk-test-0123"
    assert choice.notice is None and "sk-test" not in repr(choice)  # the key prints as ********
    with pytest.raises(MissingSecretError, match="GEMINI_API_KEY"):
        choose_oracle(oracle_job("no_key=fail"), environ={"GEMINI_API_KEY": "  "})


def test_a_local_primary_needs_no_key_and_an_openai_server_takes_its_own():
    cfg, choice = choose_oracle(oracle_job("oracle.backend=vllm", "no_key=fail"), environ={})
    assert cfg.oracle.model == "smollm2" and choice.api_key.get_secret_value() == ""
    openai = oracle_job(
        "oracle.backend=openai", "oracle.model=m", "oracle.prices={m: {input_per_m: 0, output_per_m: 0}}"
    )
    _, choice = choose_oracle(openai, environ={"OPENAI_API_KEY": "local-secret"})
    assert choice.api_key.get_secret_value() == "local-secret"


def test_a_nested_oracle_section_is_chosen_in_place_and_the_rest_of_the_config_kept():
    cfg = load_config(EvaluateConfig, None, ["models=[a]", "rewrites.enabled=true"])
    chosen, choice = choose_oracle(cfg, "rewrites", environ={})
    assert chosen.rewrites.fallback.policy == "local_only" and choice.notice
    assert chosen.model_copy(update={"rewrites": cfg.rewrites}) == cfg
    pipe = load_config(PipelineConfig, None, ["evaluate.rewrites.enabled=true"])
    chosen, oracles = choose_oracles(pipe, environ={"GEMINI_API_KEY": "k"})
    assert set(oracles) == {"augment", "rewrites"} and chosen == pipe
    assert oracles["rewrites"].api_key.get_secret_value() == "k"
    _, oracles = choose_oracles(load_config(PipelineConfig), environ={"GEMINI_API_KEY": "k"})
    assert set(oracles) == {"augment"}  # rewrites off: no key looked for


def test_the_plan_follows_the_fallback_policy_and_refuses_an_oracle_without_a_price():
    key, fb = SecretStr("remote"), SecretStr("local")
    plan = plan_oracle(oracle_job(), key, fb)
    assert (plan.primary.backend, plan.fallback, plan.policy) == ("gemini", None, "off")
    plan = plan_oracle(oracle_job("fallback.policy=on_error"), key, fb)
    assert plan.fallback.backend == "vllm" and plan.fallback_kinds == FALLBACK_KINDS["on_error"]
    plan = plan_oracle(oracle_job("fallback.policy=local_only"), key, fb)
    assert plan.primary.backend == "vllm" and plan.api_key is fb and plan.fallback is None
    with pytest.raises(ConfigError, match=r"no price in oracle\.prices"):
        plan_oracle(oracle_job("oracle.model=gemini-9-ultra"), key)
    with pytest.raises(ConfigError, match="no price"):  # the fallback needs one too, when it is used
        plan_oracle(oracle_job("fallback.policy=on_budget", "fallback.oracle.backend=gemini",
                               "fallback.oracle.model=unpriced"), key)  # fmt: skip
