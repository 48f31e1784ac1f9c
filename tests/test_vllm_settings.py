"""The vLLM engine's arguments from ``oracle.engine``: one function, so a CPU host and a GPU
cluster run the same code with other settings (no engine is started here)."""

from crome_ray.oracle.config import OracleConfig
from crome_ray.oracle.vllm_engine import cpu_has_native_bf16, engine_settings


def settings(**engine):
    return engine_settings(OracleConfig(backend="vllm", engine=engine), "/models/m")


def test_on_a_cpu_the_dtype_follows_the_cpus_bf16_and_the_cache_size_goes_to_the_environment():
    args, env = settings(device="cpu", kv_cache_gib=3, cpu_reserved_cores=0)
    assert args["dtype"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert args["enforce_eager"] is True and "tensor_parallel_size" not in args
    assert env == {"VLLM_CPU_KVCACHE_SPACE": "3", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def test_on_a_gpu_tensor_parallelism_and_memory_come_from_the_config():
    args, env = settings(device="cuda", tensor_parallel_size=4, gpu_memory_utilization=0.5)
    assert (args["tensor_parallel_size"], args["gpu_memory_utilization"]) == (4, 0.5)
    assert args["distributed_executor_backend"] == "mp" and args["dtype"] == "auto"
    assert env == {} and "enforce_eager" not in args
    assert "distributed_executor_backend" not in settings(device="cuda")[0]  # one GPU: no executor


def test_compact_json_names_the_xgrammar_backend_which_vllm_requires_for_it():
    on, _ = settings(device="cpu")  # the default
    assert on["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    off, _ = settings(device="cpu", compact_json=False)
    assert "structured_outputs_config" not in off


def test_an_explicit_dtype_and_the_engine_sizes_are_passed_as_given():
    args, _ = settings(device="cpu", dtype="bfloat16", max_model_len=1024, max_num_seqs=8)
    assert (args["dtype"], args["max_model_len"], args["max_num_seqs"], args["model"]) == (
        "bfloat16",
        1024,
        8,
        "/models/m",
    )
