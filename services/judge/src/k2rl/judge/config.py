"""Judge settings (env ``K2RL_<KEY>``, YAML ``judge:`` section); every default runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from k2rl.core.config import ServiceSettings


class JudgeSettings(ServiceSettings):
    score_concurrency: int = Field(8, gt=0, description="responses scored at once (ScoreBatch)")
    max_batch_size: int = Field(4096, gt=0, description="largest ScoreBatch; more is RESOURCE_EXHAUSTED")
    math_workers: int = Field(2, gt=0, description="processes checking math equivalence")
    math_timeout_s: float = Field(5.0, gt=0, description="hard limit of one equivalence check (worker killed)")
    math_queue_timeout_s: float = Field(60.0, gt=0, description="longest wait for a free math worker")
    code_timeout_s: float = Field(120.0, gt=0, description="deadline of the sandbox Execute of one response")
    verifier_timeout_s: float = Field(10.0, gt=0, description="limit of the in-process verifiers")
    critic_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint of the critic, e.g. http://127.0.0.1:8000/v1; "
                          "unset = no critic (Compare answers FAILED_PRECONDITION)")
    critic_model: str = Field("k2-nano", description="model name sent to the critic endpoint")
    critic_api_key: SecretStr | None = Field(None, description="bearer key of the critic endpoint")
    critic_timeout_s: float = Field(120.0, gt=0, description="limit of one critic completion")
    critic_max_tokens: int = Field(1024, gt=0)
    critic_concurrency: int = Field(8, gt=0, description="critic requests in flight")
    ranking_method: Literal["bradley_terry", "win_rate"] = "bradley_terry"
    rank_position_swap: bool = Field(True, description="judge both orders when ranking RUBRIC samples")
    critic_data_dir: Path | None = Field(
        None, description="write critic-refinement pairs from verifiable ScoreBatch groups here; unset = off")
    critic_data_dataset: str = Field("critic_refinement", description="file name (without .jsonl) of those pairs")
