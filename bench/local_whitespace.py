"""Free whitespace in structured JSON: does ``disable_any_whitespace`` work when the backend is named?

Run as: .venv/bin/python bench/local_whitespace.py BACKEND COMPACT   (e.g. xgrammar 1, xgrammar 0, auto 1)

SmolLM2-135M, float32, 8 verification requests (``crome_ray.augment.prompts.verification``
of a control, the bounded schema), greedy, 160 tokens at most; one engine per run. Prints
valid JSON, output tokens and wall time, and the first answer.
"""

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from crome_ray.augment.prompts import VERIFY_SCHEMA, Attribute, Example, verify
    from crome_ray.models import resolve_model
    from crome_ray.oracle.schema_bounds import bounded

    backend = sys.argv[1]
    compact = sys.argv[2] == "1"
    with open(REPO / "data/samples/ultrafeedback/eval_200.jsonl") as f:
        ex = [json.loads(line) for line in f][:8]
    llm = LLM(
        model=str(resolve_model("smollm2")),
        dtype="float32",
        enforce_eager=True,
        max_model_len=2048,
        structured_outputs_config={"backend": backend, "disable_any_whitespace": compact},
    )
    accuracy = Attribute("accuracy", "The answer is factually and logically correct.", 1.0)
    tasks = [  # the verifier's control probe: the chosen answer shown unchanged as its own rewrite
        verify(Example(str(i), e["prompt"], e["chosen"], e["rejected"]), "A", e["chosen"][:800], accuracy,
               "worse", chars=800)
        for i, e in enumerate(ex)
    ]  # fmt: skip
    chats = [[{"role": "system", "content": t.system}, {"role": "user", "content": t.prompt}] for t in tasks]
    sp = SamplingParams(
        max_tokens=160,
        temperature=0.0,
        structured_outputs=StructuredOutputsParams(
            json=bounded(VERIFY_SCHEMA, max_string=1200, max_items=16)
        ),
    )
    t0 = time.time()
    outs = llm.chat(chats, sp, use_tqdm=False)
    ok = 0
    for o in outs:
        try:
            json.loads(o.outputs[0].text)
            ok += 1
        except Exception:
            pass
    line = {
        "bench": "local_whitespace",
        "model": "smollm2",
        "dtype": "float32",
        "backend": backend,
        "disable_any_whitespace": compact,
        "requests": len(outs),
        "max_tokens": 160,
        "temperature": 0.0,
        "valid_json": ok,
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(line))
    print(
        f"{backend} compact={compact}: {ok}/{len(outs)} valid, "
        f"{line['output_tokens']} tokens, {line['wall_s']} s"
    )
    print("first answer:", repr(outs[0].outputs[0].text[:200]))
