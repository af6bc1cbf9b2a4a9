"""The trainer service: torch.distributed pretrain / SFT / RL training with MuonClip.

``k2rl serve trainer --nproc N`` runs rank 0 in this process (it serves gRPC) and spawns
ranks 1..N-1; under ``torchrun`` every process runs ``k2rl serve trainer``, rank 0 serves
and the others follow it (``main``).
"""

from __future__ import annotations

import os

from k2rl.core.client import ClientOptions
from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec, serve
from k2rl.trainer.config import TrainerSettings
from k2rl.trainer.launch import JobSpec, run_follower, start_job
from k2rl.trainer.metrics import PrometheusTrainerObserver
from k2rl.trainer.publish import WeightPublisher
from k2rl.trainer.servicer import TrainerServicer
from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc


def job_spec(settings: TrainerSettings) -> JobSpec:
    return JobSpec(model=settings.model, training=settings.training, device=settings.device,
                   nproc=settings.nproc, resume_from=settings.resume_from, dist_port=settings.dist_port,
                   dist_timeout_s=settings.dist_timeout_s)


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, TrainerSettings)
    local_job = start_job(job_spec(settings))
    context.on_shutdown.append(local_job.close)
    publisher = None
    if "checkpoint_engine" in settings.dependencies:
        publisher = WeightPublisher(settings.dependencies["checkpoint_engine"],
                                    ClientOptions.from_settings(settings, context.tracer_provider),
                                    rpc_timeout_s=settings.client_timeout_s,
                                    gather_timeout_s=settings.publish_gather_timeout_s)
        context.on_shutdown.append(publisher.close)  # runs before the job closes (hooks run in reverse)
    servicer = TrainerServicer(local_job.job, settings.checkpoint_dir, publisher, settings.publish_bucket_bytes,
                               PrometheusTrainerObserver(context.metrics))
    return [ServicerBinding.generated(trainer_pb2, trainer_pb2_grpc, "TrainerService", servicer)]


def main(spec: ServiceSpec, settings: ServiceSettings) -> None:
    """Rank 0 (or a lone trainer) serves; ranks > 0 of a torchrun job follow rank 0."""
    assert isinstance(settings, TrainerSettings)
    if int(os.environ.get("RANK", "0")) > 0:
        run_follower(job_spec(settings))
    else:
        serve(spec, settings)


SERVICE = ServiceSpec(
    "trainer", "torch.distributed pretrain / SFT / RL training with MuonClip", TrainerSettings, build, main
)
