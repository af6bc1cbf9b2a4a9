"""The judge service: verifiable rewards, rubric critic and pairwise comparison.

``build`` wires the domain pieces from ``JudgeSettings``: a killable process pool for math
equivalence, a sandbox stub (``dependencies['sandbox']``) for code, an optional
OpenAI-compatible critic, and mounts the servicer. Everything is closed on shutdown.
"""

from __future__ import annotations

from k2rl.core.client import close_stub
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.judge.config import JudgeSettings
from k2rl.judge.critic.client import OpenAICritic
from k2rl.judge.dataset import CriticDataWriter
from k2rl.judge.engine import Judge
from k2rl.judge.metrics import JudgeMetrics
from k2rl.judge.procpool import KillingProcessPool
from k2rl.judge.servicer import JudgeServicer
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc
from k2rl.judge.verifiers.code import CodeVerifier
from k2rl.judge.verifiers.math import MathVerifier
from k2rl.sandbox.v1 import sandbox_pb2_grpc


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, JudgeSettings)
    pool = KillingProcessPool(settings.math_workers, preload=("k2rl.judge.verifiers.math_worker",))
    sandbox = context.client(sandbox_pb2_grpc.SandboxServiceStub, "sandbox")
    critic = None
    if settings.critic_base_url:
        key = settings.critic_api_key.get_secret_value() if settings.critic_api_key else "EMPTY"
        critic = OpenAICritic(settings.critic_base_url, settings.critic_model, key, settings.critic_timeout_s,
                              settings.critic_max_tokens)
    critic_data = CriticDataWriter(settings.critic_data_dir) if settings.critic_data_dir else None
    judge = Judge(
        math=MathVerifier(pool, settings.math_timeout_s, settings.math_queue_timeout_s), code=CodeVerifier(sandbox, settings.code_timeout_s),
        critic=critic, metrics=JudgeMetrics.register(context.metrics),
        score_concurrency=settings.score_concurrency, critic_concurrency=settings.critic_concurrency,
        verifier_timeout_s=settings.verifier_timeout_s, code_timeout_s=settings.code_timeout_s,
        math_timeout_s=settings.math_timeout_s + settings.math_queue_timeout_s, critic_timeout_s=settings.critic_timeout_s,
        ranking_method=settings.ranking_method, rank_position_swap=settings.rank_position_swap,
        critic_data=critic_data, critic_dataset=settings.critic_data_dataset,
    )

    def shutdown() -> None:
        judge.close()
        pool.close()
        close_stub(sandbox)
        if critic is not None:
            critic.close()

    context.on_shutdown.append(shutdown)
    servicer = JudgeServicer(judge, settings.critic_model if critic else "none", settings.max_batch_size)
    return [ServicerBinding.generated(judge_pb2, judge_pb2_grpc, "JudgeService", servicer)]


SERVICE = ServiceSpec("judge", "verifiable rewards, rubric critic and pairwise comparison", JudgeSettings, build)
