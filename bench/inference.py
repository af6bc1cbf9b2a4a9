"""Native inference engine throughput vs transformers ``generate()`` and a naive loop.

Prints one JSON line. All three run the same weights (a k2rl preset saved as an HF
checkpoint and loaded by transformers' own DeepseekV3 / Llama classes) on the same prompts,
generating exactly ``--tokens`` tokens per sequence (EOS ignored):

* ``engine``: k2rl's native engine (paged KV cache, continuous batching), all prompts
  submitted at once; TTFT = arrival to first token, TPOT = mean inter-token time;
* ``transformers``: ``model.generate(..., do_sample=False)`` with its KV cache, the batch
  left-padded;
* ``naive``: one sequence at a time, every step a full forward over the whole sequence
  (no KV-cache reuse, no batching), i.e. the HF-style loop the DESIGN.md target names.

``ratio_*`` are engine tokens/s over the baseline's. The naive loop is O(n^2) per sequence,
so it is timed on ``--naive-seqs`` sequences and extrapolated by tokens/s (it does not batch,
so its rate does not depend on the batch size).

    python bench/inference.py                       # k2-nano, CPU, batches 1 8 32
    python bench/inference.py --device cuda --model k2-micro --tokens 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from k2rl.inference.engine import Engine, EngineConfig, GenerationRequest
from k2rl.inference.sampling import SamplingOptions
from k2rl.models import build_model, get_preset, save_model
from k2rl.models.tokenizer import load_tokenizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prompts(batch: int, prompt_len: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, min(vocab, 256), (prompt_len,), generator=g).tolist() for _ in range(batch)
    ]


def bench_engine(engine: Engine, prompts: list[list[int]], tokens: int) -> dict[str, float]:
    options = SamplingOptions(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    start = time.perf_counter()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for i, prompt in enumerate(prompts):
        engine.add_request(GenerationRequest(f"b{i}", prompt, options))
    generated = 0
    while engine.has_work:
        updates = engine.step()
        _sync(engine.device)
        now = time.perf_counter()
        for update in updates:
            generated += len(update.token_ids)
            first.setdefault(update.request_id, now)
            last[update.request_id] = now
    elapsed = time.perf_counter() - start
    ttft = [first[k] - start for k in first]
    tpot = [(last[k] - first[k]) / max(tokens - 1, 1) for k in first]
    return {
        "tokens_per_s": generated / elapsed,
        "ttft_ms_median": 1e3 * statistics.median(ttft),
        "tpot_ms_median": 1e3 * statistics.median(tpot),
    }


@torch.no_grad()
def bench_transformers(model, prompts: list[list[int]], tokens: int, pad_id: int) -> float:
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    start = time.perf_counter()
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        pad_token_id=pad_id,
        use_cache=True,
    )
    _sync(device)
    return (out.shape[1] - width) * len(prompts) / (time.perf_counter() - start)


@torch.no_grad()
def bench_naive(model, prompts: list[list[int]], tokens: int) -> float:
    start = time.perf_counter()
    device = model.lm_head.weight.device
    for prompt in prompts:
        ids = torch.tensor([prompt], device=device)
        for _ in range(tokens):
            next_id = model(ids)[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    _sync(device)
    return tokens * len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="k2-nano")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--naive-seqs", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default"
    )
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = get_preset(args.model)
    model = build_model(config, device=device, seed=0).eval()
    tokenizer = load_tokenizer(args.model)
    engine = Engine(
        model,
        tokenizer,
        EngineConfig(max_running_requests=max(args.batches), kv_cache_bytes=256 << 20),
    )
    hf_model = None
    if not args.skip_transformers:
        import transformers

        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, Path(tmp))
            # transformers maps per-expert checkpoint tensors to its fused experts only for
            # model_type deepseek_v3; K2's "kimi_k2" is the same architecture.
            config_file = Path(tmp) / "config.json"
            hf_config = json.loads(config_file.read_text())
            if hf_config.get("model_type") == "kimi_k2":
                config_file.write_text(json.dumps({**hf_config, "model_type": "deepseek_v3"}))
            architecture = type(model).__name__
            hf_model = getattr(transformers, architecture).from_pretrained(tmp).to(device).eval()

    bench_engine(engine, _prompts(2, args.prompt_len, config.vocab_size, 99), 4)  # warm-up
    naive = bench_naive(
        model, _prompts(args.naive_seqs, args.prompt_len, config.vocab_size, 1), args.tokens
    )
    results: dict[str, object] = {
        "bench": "inference",
        "model": args.model,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "prompt_len": args.prompt_len,
        "tokens": args.tokens,
        "naive_tokens_per_s": naive,
    }
    for batch in args.batches:
        prompts = _prompts(batch, args.prompt_len, config.vocab_size, batch)
        row = bench_engine(engine, prompts, args.tokens)
        entry: dict[str, float] = {
            "engine_tokens_per_s": row["tokens_per_s"],
            "ttft_ms_median": row["ttft_ms_median"],
            "tpot_ms_median": row["tpot_ms_median"],
            "ratio_vs_naive": row["tokens_per_s"] / naive,
        }
        if hf_model is not None:
            hf = bench_transformers(hf_model, prompts, args.tokens, tokenizer.pad_token_id or 0)
            entry["transformers_tokens_per_s"] = hf
            entry["ratio_vs_transformers"] = row["tokens_per_s"] / hf
        results[f"batch_{batch}"] = entry
    print(json.dumps(results))


if __name__ == "__main__":
    main()
