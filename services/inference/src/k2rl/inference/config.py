"""Settings of the inference service (every key has a default that runs on a laptop CPU)."""

from __future__ import annotations

import socket
from typing import Any, Literal

from pydantic import Field

from k2rl.core.config import MiB, ServiceSettings
from k2rl.inference.engine import EngineConfig
from k2rl.inference.vllm_backend import VllmOptions


class InferenceSettings(ServiceSettings):
    model: str = Field("k2-nano", description="preset name (random init from `seed`) or HF checkpoint directory")
    tokenizer: str | None = Field(None, description="tokenizer preset or directory; unset = the model's")
    served_model_name: str | None = Field(None, description="model id of the OpenAI API; unset = `model`")
    backend: Literal["native", "vllm"] = Field(
        "native", description="native torch engine, or vLLM (GPU, `pip install 'k2rl-inference[vllm]'`, "
        "`model` must be an HF checkpoint directory)")
    device: str = Field("cpu", description="torch device of the native engine, e.g. cpu or cuda:0")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = Field(0, ge=0, description="model init seed for presets and the shared sampling generator")
    block_size: int = Field(16, gt=0, description="tokens per KV-cache block")
    num_kv_blocks: int = Field(0, ge=0, description="KV-cache blocks; 0 = as many as kv_cache_bytes holds")
    kv_cache_bytes: int = Field(64 * MiB, gt=0, description="KV-cache budget when num_kv_blocks is 0")
    max_running_requests: int = Field(64, gt=0, description="sequences decoded together")
    max_batched_tokens: int = Field(4096, gt=0, description="padded tokens of one prefill step")
    max_context_length: int = Field(0, ge=0, description="prompt + output limit; 0 = the model's")
    enable_prefix_caching: bool = True
    weight_update_standby: bool | None = Field(
        None, description="native engine: receive weight updates in place into a standby parameter set, "
        "swapped with the served one at commit (no allocation per update; costs one extra copy of the "
        "weights, held from the first update on); unset = on for a CPU device, off for accelerators")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM backend: GPUs the model is split over")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM backend: share of GPU memory it may use")
    vllm_engine_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM backend: further `vllm.LLM` keyword arguments (override ours)")
    http_host: str = Field("127.0.0.1", description="address of the OpenAI-compatible HTTP API")
    http_port: int = Field(8052, ge=-1, le=65535, description="its port; 0 = any free port, -1 = disabled")
    initial_weight_version: int = Field(
        0, ge=0, description="version reported for the weights loaded at startup (updates must be newer)"
    )

    checkpoint_engine_replica: bool = Field(
        False, description="register with the checkpoint engine (dependencies['checkpoint_engine']) as an "
        "inference replica and take weight versions from it; off = standalone (weights from `model` only)")
    replica_name: str = Field("", description="stable replica name across restarts; unset = <hostname>/inference-<port>")
    advertise_address: str = Field(
        "", description="host:port engine workers dial for UpdateWeights; unset = host:port (hostname if host is 0.0.0.0)")

    def replica_address(self) -> str:
        if self.advertise_address:
            return self.advertise_address
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "[::]") else self.host
        return f"{host}:{self.grpc_port}"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            block_size=self.block_size,
            num_kv_blocks=self.num_kv_blocks,
            kv_cache_bytes=self.kv_cache_bytes,
            max_running_requests=self.max_running_requests,
            max_batched_tokens=self.max_batched_tokens,
            max_context_length=self.max_context_length,
            enable_prefix_caching=self.enable_prefix_caching,
            seed=self.seed,
            weight_update_standby=self.weight_update_standby,
        )

    def vllm_options(self) -> VllmOptions:
        return VllmOptions(
            model=self.model,
            tokenizer=self.tokenizer,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_context_length,
            max_num_seqs=self.max_running_requests,
            enable_prefix_caching=self.enable_prefix_caching,
            seed=self.seed,
            extra=dict(self.vllm_engine_args),
        )
