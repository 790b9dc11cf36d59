"""`tfs-model-server`: a drop-in for `tensorflow_model_server`, gRPC and REST on one event loop.

    tfs-model-server --port=8500 --rest_api_port=8501 --model_name=m --model_base_path=/models/m

Flags are tensorflow_model_server's (see `orchestrator.server.flags`). Start-up follows TF Serving:
parse flags and config files, load the initial models (waiting until each initial version is
AVAILABLE or has failed), then open the ports and log

    Running gRPC ModelServer at 0.0.0.0:8500 ...
    Exporting HTTP/REST API at:localhost:8501 ...

Ports bind to the address in the environment variable TFS_BIND_HOST (default 0.0.0.0, what a
container needs; the local runtime sets 127.0.0.1). A port already in use is reported before any
model loads. Every start-up failure ends as TF Serving's does: `Failed to start server. Error:
CODE: message` on stdout and exit status 255 (its main() returns -1). Logs go to stderr, one line per event
(`time level logger: message`); TensorFlow's own C++ logs are quietened unless
TF_CPP_MIN_LOG_LEVEL is set. SIGTERM / SIGINT stop the server cleanly (exit 0).

`--log_format=json` (or TFS_LOG_FORMAT=json; ours, not TF Serving's) writes one JSON object per
line with time, level, logger, message and, for a request, model, version and request_id.
Request ids come from the `X-Request-Id` header / `x-request-id` gRPC metadata, or are generated,
and are returned in the response header / trailing metadata.

Environment: TFS_BIND_HOST, TFS_MAX_REQUEST_BYTES (REST body limit, default 256 MiB),
TFS_LOG_LEVEL (default INFO), TFS_RUN_THREADS (session-run threads, default max(4, 2 x CPUs)),
TFS_INLINE_RUN=0 (never run small graphs in the calling thread; see runner._is_simple_graph).
TFS_LOOP_RUN_MAX_US (default 500; 0 = never): small graphs whose runs typically take less run
right on the event loop, saving the hand-off to a run thread (see batching.DirectRunner).
TFS_VERSION_METRICS=0 turns off our per-version `tfso_*` metrics (see server.metrics); TF Serving's
own metrics stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib
import logging
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.server import flags as flagmod
from orchestrator.server.config import (
    ConfigError,
    ModelConfig,
    read_batching_parameters,
    read_model_config_file,
    read_monitoring_config,
    read_ssl_config,
    read_text_proto,
    single_model,
)
from orchestrator.server.status import ServingStatus
from orchestrator.server.workers import INDEX_ENV as WORKER_ENV
from orchestrator.server.workers import READY

log = logging.getLogger("tfs.server")
INT32_MAX = 2**31 - 1
VERSION = "2.21.0"


EXIT_FAILURE = 255  # tensorflow_model_server's main() returns -1 on every start-up failure


class StartupError(Exception):
    """The server cannot start; the message says why, `code` is TF Serving's status code."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


def _failed_to_start(code: str, message: str) -> int:
    """TF Serving's last words, on stdout as its main() writes them."""
    print(f"Failed to start server. Error: {code}: {message}", flush=True)
    return EXIT_FAILURE


def _setup_logging(fmt: str = "text") -> None:
    from orchestrator.logs import RequestContext, configure
    from orchestrator.server.metrics import CURRENT_CALL

    level = os.environ.get("TFS_LOG_LEVEL", "INFO").upper()
    configure(fmt, getattr(logging, level, logging.INFO), stream=sys.stderr,
              context=RequestContext(CURRENT_CALL.get))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow's Python logger repeats deprecation notices for the TF1 loader we use on purpose.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            why = (
                "is already in use"
                if e.errno == errno.EADDRINUSE
                else f"cannot be bound: {e.strerror}"
            )
            flag = "port" if what == "gRPC" else "rest_api_port"
            log.error("%s port %d on %s %s; choose another with --%s=N", what, port, host, why, flag)
            if what == "gRPC":
                raise StartupError("Failed to BuildAndStart gRPC server") from None
            raise StartupError(f"Failed to start HTTP Server at localhost:{port}") from None


def _session_config(path: str) -> bytes:
    """--tensorflow_session_config_file: a text ConfigProto, serialized for every load."""
    if not path:
        return b""
    from tensorflow.core.protobuf import config_pb2

    return read_text_proto(path, config_pb2.ConfigProto()).SerializeToString()


def _per_model_batching(servable: Any, path: str, common: Any) -> None:
    """TF Serving's GetPerModelBatchingParams: a version's batching_params.pbtxt replaces the
    global parameters but the thread count; a version without one is not batched."""
    import dataclasses

    params = os.path.join(path, "batching_params.pbtxt")
    if not os.path.exists(params):
        servable.batching_off = True
        return
    own = read_batching_parameters(params, cpus=os.cpu_count() or 1)
    servable.batching_options = dataclasses.replace(own, num_batch_threads=common.num_batch_threads)


def _channel_args(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise StartupError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


class ModelServer:
    """Owns everything one server process runs; `start()` then `wait()`, `stop()` to end."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.host = os.environ.get("TFS_BIND_HOST", "0.0.0.0")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._grpc: Any = None
        self._rest_runner: Any = None
        self._rest_api: Any = None
        self._config_text: str | None = None
        from orchestrator.server.workers import Link

        self.link = Link.from_env()  # set in a worker process (see server.workers)

    def initial_configs(self) -> list[ModelConfig]:
        o = self.opts
        saved = self.link.saved_config() if self.link is not None else None
        if saved is not None:  # a restarted worker serves what the others were told to
            with contextlib.suppress(OSError), open(o.model_config_file, encoding="utf-8") as fh:
                self._config_text = fh.read()
            return saved
        if o.model_config_file:
            configs = read_model_config_file(o.model_config_file)
            with contextlib.suppress(OSError), open(o.model_config_file, encoding="utf-8") as fh:
                self._config_text = fh.read()
            return configs
        log.info(
            "Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
            o.model_name,
            o.model_base_path,
        )
        return single_model(o.model_name, o.model_base_path)

    async def start(self) -> None:
        o = self.opts
        if o.rest_api_port and o.rest_api_port == o.port:
            # TF Serving logs this and runs without REST; we refuse to start half a server.
            raise StartupError(
                "server_options.http_port cannot be same as grpc_port. Please use a different "
                "port for HTTP/REST API."
            )
        if o.port and self.link is None:  # workers share ports their supervisor checked
            _check_port_free(self.host, o.port, "gRPC")
        if o.rest_api_port and self.link is None:
            _check_port_free(self.host, o.rest_api_port, "REST")
        configs = self.initial_configs()
        cpus = os.cpu_count() or 1
        batching = (
            read_batching_parameters(o.batching_parameters_file, cpus=cpus)
            if o.enable_batching
            else None
        )
        monitoring = read_monitoring_config(o.monitoring_config_file)
        ssl = read_ssl_config(o.ssl_config_file)

        from orchestrator.server import runner as r
        from orchestrator.server.batching import BatchingRunner, DirectRunner, RunPool
        from orchestrator.server.core import Core
        from orchestrator.server.grpc_service import GrpcApi, Health
        from orchestrator.server.manager import Manager
        from orchestrator.server.metrics import Metrics
        from orchestrator.server.rest import RestApi
        from orchestrator.server.warmup import warmup

        r.METHOD_NAME_CHECK = bool(o.enable_signature_method_name_check)
        if o.tensorflow_intra_op_parallelism > 0 or o.tensorflow_inter_op_parallelism > 0:
            intra, inter = o.tensorflow_intra_op_parallelism, o.tensorflow_inter_op_parallelism
        else:  # server.cc: --tensorflow_session_parallelism sets both pools
            intra = inter = o.tensorflow_session_parallelism
        session_options = r.SessionOptions(
            tags=tuple(t for t in o.saved_model_tags.split(",") if t) or ("serve",),
            intra_op_threads=intra,
            inter_op_threads=inter,
            gpu_memory_fraction=o.per_process_gpu_memory_fraction,
            session_config=_session_config(o.tensorflow_session_config_file),
            mixed_precision=o.mixed_precision,
        )
        if o.mixed_precision and o.mixed_precision != "bfloat16":
            log.warning(
                "%s auto mixed precision is not supported. Valid option: bfloat16", o.mixed_precision
            )
        elif o.mixed_precision:
            log.info("Running inference with bfloat16 auto mixed precision")
        from orchestrator.server.tflite import TfLiteOptions, TfLiteServable, has_tflite

        tflite_options = TfLiteOptions(
            num_pools=max(1, o.num_tflite_pools),
            interpreters_per_pool=max(1, o.num_tflite_interpreters_per_pool),
        )
        run_threads = int(os.environ.get("TFS_RUN_THREADS", "0") or 0) or max(4, 2 * cpus)
        self.pool = RunPool(run_threads)
        load_executor = ThreadPoolExecutor(
            max_workers=max(1, o.num_load_threads or 2), thread_name_prefix="tfs-load"
        )
        metrics = Metrics()

        def load(name: str, version: int, path: str) -> Any:
            servable: r.Servable
            started = time.perf_counter()
            try:
                if o.prefer_tflite_model and has_tflite(path):
                    servable = TfLiteServable(name, version, path, tflite_options)
                else:
                    servable = r.Servable(name, version, path, session_options)
            except r.LoadError:
                metrics.load_attempts.inc(path, "error")
                raise
            if batching is not None and o.enable_per_model_batching_parameters:
                try:
                    _per_model_batching(servable, path, batching)
                except ConfigError as e:
                    metrics.load_attempts.inc(path, "error")
                    raise r.LoadError(e.code, str(e)) from None
            if o.enable_model_warmup:
                warmup(servable, max(1, o.num_request_iterations_for_warmup))
            metrics.load_attempts.inc(path, "success")
            if metrics.versions is not None:  # a load thread: one dict store, no lock needed
                metrics.versions.load_duration.set(
                    time.perf_counter() - started, name, str(version)
                )
            return servable

        health = Health()
        loop = asyncio.get_running_loop()
        pending_health: list[bool] = []

        def on_change() -> None:
            if pending_health:
                return
            pending_health.append(True)

            async def push() -> None:
                pending_health.clear()
                await health.update(self.manager.availability())

            task = loop.create_task(push())
            self._tasks.append(task)
            task.add_done_callback(self._forget)

        self.manager = Manager(
            load=load,
            executor=load_executor,
            poll_wait_s=o.file_system_poll_wait_seconds,
            max_load_retries=o.max_num_load_retries,
            load_retry_interval_s=o.load_retry_interval_micros / 1e6,
            allow_labels_for_unavailable=o.allow_version_labels_for_unavailable_models,
            on_change=on_change,
        )
        run: Any
        if batching is not None:
            run = BatchingRunner(self.pool, batching)
            run.on_batch = self._on_batch
        else:
            run = DirectRunner(self.pool)
        self.core = Core(self.manager, run, metrics)
        metrics.renderers.append(self.core.payload.counters.render)
        if metrics.versions is not None:
            metrics.versions.collectors.append(self._scrape_gauges)

        # TensorFlow is imported once, here, before loads run on parallel threads: first imports
        # of its modules from two threads at once can deadlock (a TFLite load imports its protos
        # while a SavedModel load imports the package).
        await loop.run_in_executor(load_executor, importlib.import_module, "tensorflow")
        try:
            await self.manager.apply_config(configs)
        except ServingStatus as e:
            raise StartupError(e.message, e.code) from None
        self.core.payload.configure(configs)
        # TensorFlow and the first models leave ~300,000 tracked objects that live as long as the
        # process: a full collection over them held the GIL for 0.4-0.7 s under load (a stalled
        # scrape, a stalled request). Frozen, the collector skips them.
        gc.freeze()

        if o.port or o.grpc_socket_path:
            grpc_api = GrpcApi(
                self.core,
                self.reload,
                tensor_content=o.enable_serialization_as_tensor_content,
            )
            self._grpc = await self._start_grpc(grpc_api, health, ssl)
            if o.port:
                log.info("Running gRPC ModelServer at %s:%d ...", self.host, o.port)
            if o.grpc_socket_path:
                log.info("Running gRPC ModelServer at UNIX socket %s ...", o.grpc_socket_path)
        if o.rest_api_port:
            from aiohttp import web

            api = RestApi(
                self.core,
                timeout_ms=o.rest_api_timeout_in_ms,
                monitoring=monitoring,
                cors=o.rest_api_enable_cors_support,
            )
            if self.link is not None:
                api.metrics_page = self._merged_metrics
            self._rest_api = api
            try:
                rest_server = api.server()
            except ValueError as e:  # a bad TFS_* setting of the REST server
                raise StartupError(str(e)) from None
            self._rest_runner = web.ServerRunner(rest_server, handle_signals=False)
            await self._rest_runner.setup()
            site = web.TCPSite(
                self._rest_runner,
                self.host,
                o.rest_api_port,
                reuse_address=True,
                reuse_port=self.link is not None,
            )
            try:
                await site.start()
            except OSError as e:
                log.error("REST port %d on %s: %s", o.rest_api_port, self.host, e.strerror)
                raise StartupError(
                    f"Failed to start HTTP Server at localhost:{o.rest_api_port}"
                ) from None
            log.info("Exporting HTTP/REST API at:localhost:%d ...", o.rest_api_port)
        await health.update(self.manager.availability())
        self.manager.start_polling()
        if o.model_config_file and o.model_config_file_poll_wait_seconds > 0:
            self._tasks.append(loop.create_task(self._poll_config_file()))
        if self.link is not None:
            await self.link.start(
                {"reload": self._apply}, {"metrics": self._own_metrics},
                snapshot=lambda: self._own_metrics(None),
            )  # fmt: skip
            print(READY, flush=True)

    def _own_metrics(self, _: Any) -> str:
        """This worker's page, rendered on the link's thread while the loop may update the
        counters: a dict that grows mid-render (a new label set) is simply rendered again."""
        for _attempt in range(5):
            try:
                return self.core.metrics.render()
            except RuntimeError:  # dictionary changed size during iteration
                continue
        return self.core.metrics.render()

    def _merged_metrics(self) -> str:
        """Every worker's counts summed (server.workers.merge_pages): this worker's, fresh, and
        the others' latest snapshots, so a scrape never waits for another process."""
        assert self.link is not None
        return self.link.merged_page(self.core.metrics.render())

    def _on_batch(self, model: str, size: int, version: int) -> None:
        metrics = self.core.metrics
        metrics.batch_size.observe(size, model)
        if metrics.versions is not None:
            metrics.versions.batch_size.observe(size, model, str(version))

    def _scrape_gauges(self) -> Any:
        """Per-version gauges computed when Prometheus scrapes: availability, batch queues."""
        from orchestrator.server import metrics as m

        batching = getattr(self.core.runner, "options", None)
        if batching is not None:
            yield m.QUEUE_CAPACITY, float(batching.max_enqueued_batches), ()
        # list(): a scrape may be answered on the scrape thread while the loop loads a model.
        for name, entry in list(self.manager.models.items()):
            for vs in list(entry.versions.values()):
                version = str(vs.version)
                yield m.MODEL_AVAILABLE, 1.0 if vs.state == "AVAILABLE" else 0.0, (name, version)
                if batching is not None and vs.servable is not None:
                    depth = sum(len(q.waiting) for q in list(vs.servable.batch_queues.values()))
                    yield m.QUEUE_DEPTH, float(depth), (name, version)

    def _forget(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _start_grpc(self, api: Any, health: Any, ssl: Any) -> Any:
        import grpc

        options = [
            ("grpc.max_receive_message_length", INT32_MAX),
            ("grpc.max_send_message_length", INT32_MAX),
            ("grpc.so_reuseport", 1 if self.link is not None else 0),
            *_channel_args(self.opts.grpc_channel_arguments),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=None)
        server.add_generic_rpc_handlers(api.handlers())
        if self.opts.enable_profiler:
            from orchestrator.server.profiler import ProfilerApi

            server.add_generic_rpc_handlers(ProfilerApi().handlers())
            log.info("Profiler service is enabled")
        health.register(server)
        creds = None
        if ssl is not None:
            creds = grpc.ssl_server_credentials(
                [(ssl.server_key.encode(), ssl.server_cert.encode())],
                root_certificates=ssl.custom_ca.encode() or None,
                require_client_auth=ssl.client_verify,
            )
        addresses = []
        if self.opts.port:
            host = f"[{self.host}]" if ":" in self.host else self.host
            addresses.append((f"{host}:{self.opts.port}", f"port {self.opts.port} on {self.host}"))
        if self.opts.grpc_socket_path:
            # Beside the TCP port, with the same credentials, as TF Serving does.
            path = self.opts.grpc_socket_path
            addresses.append((f"unix:{path}", f"UNIX socket {path}"))
        for address, what in addresses:
            try:
                bound = (
                    server.add_secure_port(address, creds)
                    if creds is not None
                    else server.add_insecure_port(address)
                )
            except RuntimeError as e:
                log.error("gRPC %s: %s", what, e)
                raise StartupError("Failed to BuildAndStart gRPC server") from None
            if not bound:
                log.error("gRPC %s cannot be bound (in use, or no such directory)", what)
                raise StartupError("Failed to BuildAndStart gRPC server")
        await server.start()
        return server

    async def reload(self, configs: list[ModelConfig]) -> None:
        """gRPC HandleReloadConfigRequest: here, then in every other worker, before answering."""
        await self._apply(configs)
        if self.link is None:
            return
        self.link.save_config(configs)
        for answer in await self.link.ask_all("reload", configs):
            if answer[0] == "err":
                raise ServingStatus(answer[1], answer[2])
            if answer[0] == "gone":  # it restarts from the saved config
                log.warning("reload: %s", answer[2])

    async def _apply(self, configs: list[ModelConfig]) -> None:
        """Replace the whole model config of this process."""
        names = ", ".join(c.name for c in configs) or "(none)"
        log.info("Reloading model config: %s", names)
        await self.manager.apply_config(configs)
        self.core.payload.configure(configs)

    async def _poll_config_file(self) -> None:
        path = self.opts.model_config_file
        while True:
            await asyncio.sleep(self.opts.model_config_file_poll_wait_seconds)
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                if text == self._config_text:
                    continue
                self._config_text = text
                configs = read_model_config_file(path)
            except (OSError, ConfigError) as e:
                code = getattr(e, "code", "UNKNOWN")
                log.error("Failed to read ModelServerConfig file: %s: %s", code, e)
                continue
            try:
                await self._apply(configs)  # every worker polls the file itself
                if self.link is not None:
                    self.link.save_config(configs)
            except (ConfigError, ServingStatus) as e:
                code = getattr(e, "code", "UNKNOWN")
                log.error(
                    "PollFilesystemAndReloadConfig failed to ReloadConfig: %s: %s",
                    code,
                    getattr(e, "message", e),
                )

    async def wait(self) -> None:
        await self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.link is not None:
            await self.link.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
        if self._rest_api is not None:
            self._rest_api.close()
        if hasattr(self, "manager"):
            await self.manager.close()
        if hasattr(self, "core"):
            await asyncio.get_running_loop().run_in_executor(None, self.core.payload.close)


async def _serve(opts: Any) -> int:
    server = ModelServer(opts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, server.request_stop)
    try:
        await server.start()
    except (StartupError, ConfigError) as e:
        await server.stop()
        return _failed_to_start(e.code, str(e))
    except OSError as e:
        await server.stop()
        return _failed_to_start("UNKNOWN", f"{e.filename or ''}; {e.strerror}")
    await server.wait()
    log.info("Shutting down")
    await server.stop()
    return 0


def _supervise(args: list[str], opts: Any, workers: int) -> int:
    """Check the ports once, then run the workers (server.workers.Supervisor)."""
    from orchestrator.server.workers import supervise

    host = os.environ.get("TFS_BIND_HOST", "0.0.0.0")
    try:
        if opts.rest_api_port and opts.rest_api_port == opts.port:
            raise StartupError(
                "server_options.http_port cannot be same as grpc_port. Please use a different "
                "port for HTTP/REST API."
            )
        if opts.port:
            _check_port_free(host, opts.port, "gRPC")
        if opts.rest_api_port:
            _check_port_free(host, opts.rest_api_port, "REST")
    except StartupError as e:
        return _failed_to_start(e.code, str(e))
    log.info("Starting %d worker processes (--rest_api_num_threads)", workers)
    return supervise(args, workers)


def _tensorflow_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - the server needs TensorFlow
        return "unknown"


class _NoPlotting:
    """A meta path finder that refuses matplotlib: the server never draws, but `import
    tensorflow` loads Keras, which imports matplotlib.pyplot when installed (for its plotting
    helpers only, and treats ImportError as "no matplotlib"). Refusing it saves about 1.2 s of
    CPU, a fifth of TensorFlow's import, at every server start."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"{name} is not loaded by tfs-model-server", name=name)


def refuse_plotting() -> None:
    if not any(isinstance(f, _NoPlotting) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPlotting())  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean stop, --help or --version; 255 (TF Serving's -1) on any failure."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "-help", "-h") for a in args):
        print(flagmod.usage())
        return 0
    try:
        opts = flagmod.parse(args)
    except flagmod.FlagError as e:
        # Upstream prints the usage and exits -1; the first line says what was wrong.
        print(f"tfs-model-server: {e}", file=sys.stderr)
        print(flagmod.usage())
        return EXIT_FAILURE
    if opts.version:
        print(
            f"TensorFlow ModelServer: {VERSION}-orchestrator\n"
            f"TensorFlow Library: {_tensorflow_version()}"
        )
        return 0
    _setup_logging(opts.log_format if opts.log_format in ("text", "json") else "text")
    try:
        flagmod.validate(opts)
    except flagmod.FlagError as e:
        return _failed_to_start("INVALID_ARGUMENT", str(e))
    workers = flagmod.workers(opts)
    if workers > 1 and os.environ.get(WORKER_ENV) is None:
        return _supervise(args, opts, workers)
    refuse_plotting()
    if os.environ.get(WORKER_ENV) is not None:
        from orchestrator.server.workers import Link

        link = Link.from_env()
        if link is not None:
            link.watch_parent()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional on Windows
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_serve(opts))
    except KeyboardInterrupt:  # pragma: no cover
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
