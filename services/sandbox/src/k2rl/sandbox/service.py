"""The sandbox service: isolated execution of untrusted code (K2 report §3.2.1).

``build`` refuses to start when bubblewrap cannot confine programs, unless
``unsafe_dev_mode`` is set (which logs a loud warning and reports no namespaces in
GetPoolStats.isolation_features).
"""

from __future__ import annotations

from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.sandbox.cgroups import CgroupTree
from k2rl.sandbox.http_api import HttpApiServer
from k2rl.sandbox.isolation import Isolation, IsolationConfig
from k2rl.sandbox.pods import PodApi, PodConfig, PodManager, label_value
from k2rl.sandbox.pool import PoolLimits, SandboxPool
from k2rl.sandbox.programs import Executor, Toolchain
from k2rl.sandbox.runtime import ProcessRuntime
from k2rl.sandbox.servicer import SandboxServicer
from k2rl.sandbox.sessions import SessionStore
from k2rl.sandbox.settings import SandboxSettings
from k2rl.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc


def build_pool(settings: SandboxSettings, context: ServiceContext) -> tuple[SandboxPool, Isolation]:
    settings.work_root.mkdir(parents=True, exist_ok=True)
    settings.work_root.chmod(0o711)  # the sandbox uid must traverse it to reach its own directory
    isolation = Isolation(IsolationConfig(
        work_root=settings.work_root, bwrap_path=settings.bwrap_path, launcher_compiler=settings.launcher_compiler,
        setpriv_path=settings.setpriv_path,
        ro_binds=tuple(settings.ro_binds),
        tmp_size_bytes=settings.tmp_size_bytes, sandbox_uid=settings.sandbox_uid,
        sandbox_gid=settings.sandbox_gid, seccomp=settings.seccomp, unsafe_dev_mode=settings.unsafe_dev_mode,
    ))
    sessions = SessionStore(settings.work_root, settings.max_sessions, settings.session_idle_timeout_s,
                            settings.max_session_idle_timeout_s, isolation.file_owner, pods=build_pods(settings),
                            sessions_on_pods=settings.session_runtime == "kubernetes")
    cgroups = (CgroupTree.detect(settings.cgroup_root, settings.work_root, settings.cgroup_cpus,
                                 settings.launcher_compiler) if settings.cgroups else None)
    executor = Executor(ProcessRuntime(isolation, cgroups),
                        Toolchain(settings.python_command, settings.bash_command, settings.cxx_command),
                        isolation.file_owner)
    limits = PoolLimits(settings.concurrency, settings.max_queue, settings.default_limits, settings.limit_ceilings)
    return SandboxPool(executor, limits, sessions, settings.work_root, context.metrics), isolation


def build_pods(settings: SandboxSettings) -> PodManager | None:
    """The Kubernetes runtime, with its NetworkPolicy ensured and a crashed predecessor's pods deleted."""
    if not settings.k8s_namespace:
        return None
    config = PodConfig(
        namespace=settings.k8s_namespace, instance_id=label_value(settings.k8s_instance_id),
        default_image=settings.k8s_default_image, keepalive_command=tuple(settings.k8s_keepalive_command),
        cpu_request=settings.k8s_cpu_request, cpu_limit=settings.k8s_cpu_limit,
        ephemeral_storage_limit=settings.k8s_ephemeral_storage_limit,
        workdir_size_limit=settings.k8s_workdir_size_limit, run_as_user=settings.k8s_run_as_user,
        run_as_group=settings.k8s_run_as_group, runtime_class_name=settings.k8s_runtime_class,
        start_timeout_s=settings.k8s_pod_start_timeout_s, max_lifetime_s=settings.k8s_pod_max_lifetime_s)
    pods = PodManager(PodApi(settings.k8s_namespace, settings.k8s_api_url, settings.k8s_verify_ssl), config)
    pods.start()  # no session is live yet: every pod of this instance is an orphan
    return pods


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, SandboxSettings)
    pool, isolation = build_pool(settings, context)
    context.on_shutdown.append(pool.sessions.shutdown)
    context.on_shutdown.append(pool.close)
    if settings.http_port:
        http = HttpApiServer(pool, settings.http_host, settings.http_port)
        http.start()
        context.on_shutdown.append(http.stop)
    features = isolation.features + pool.executor.runtime.features
    servicer = SandboxServicer(pool, pool.sessions, sandbox_pb2.SANDBOX_RUNTIME_PROCESS, features,
                               settings.max_read_bytes)
    return [ServicerBinding.generated(sandbox_pb2, sandbox_pb2_grpc, "SandboxService", servicer)]


SERVICE = ServiceSpec("sandbox", "isolated execution of untrusted code", SandboxSettings, build)
