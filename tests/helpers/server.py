"""Reusable pieces for tests that need a real `tfs-model-server`: test models and a process fixture.

    from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, free_port

    base = export_half_plus_two_tf1(tmp / "half_plus_two", versions=(1,))
    with ServerProcess(["--model_name=half_plus_two", f"--model_base_path={base}"]) as srv:
        srv.wait_until_available("half_plus_two")
        requests.post(srv.rest_url + "/v1/models/half_plus_two:predict", json=...)

Models are built here with TensorFlow (imported lazily, in a subprocess-free way); every wait has a
deadline and says what it waited for, with the server's last log lines, when it gives up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from orchestrator.launch import Launched, start_server

SERVER_CMD = [sys.executable, "-m", "orchestrator.server.main"]


def free_port() -> int:
    """A loopback port for a server to bind (outside the ephemeral range: runtime.base)."""
    from orchestrator.runtime.base import free_port as pick

    return pick("127.0.0.1")


class ServerExited(RuntimeError):
    """The server process is gone: no point waiting for it any longer."""


def wait_until(
    cond: Callable[[], Any],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    logs: Callable[[], str] | None = None,
) -> Any:
    """Poll `cond` until it returns something truthy; TimeoutError naming `what` otherwise.

    Exceptions from `cond` count as "not yet" (connection refused while starting...), except
    ServerExited, which ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except ServerExited:
            raise
        except Exception as e:  # transient: connection refused while starting, etc.
            last_exc = e
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s:.0f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            if logs is not None:
                msg += "\n--- server log tail ---\n" + logs()[-4000:]
            raise TimeoutError(msg)
        time.sleep(interval_s)


# -- models ----------------------------------------------------------------------------------------
def _tf():  # type: ignore[no-untyped-def]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def export_half_plus_two_tf1(
    base: str | os.PathLike, versions: Iterable[int] = (1,), *, b: float = 2.0
) -> str:
    """TF1-style half_plus_two like upstream's: y = 0.5 * x + b.

    Signatures: serving_default (predict x -> y, declared shape [-1, 1]), classify_x_to_y
    (tf.Example -> scores), classify_x_to_classes (tf.Example -> classes + scores), regress_x_to_y
    (tf.Example -> outputs), and the same regress / classify signatures under the keys
    "tensorflow/serving/regress" and "tensorflow/serving/classify".
    """
    tf = _tf()
    v1 = tf.compat.v1
    for version in versions:
        path = Path(base) / str(version)
        if path.exists():
            shutil.rmtree(path)
        graph = tf.Graph()
        with graph.as_default(), v1.Session(graph=graph) as sess:
            a = v1.Variable(0.5, name="a")
            bv = v1.Variable(b, name="b")
            serialized = v1.placeholder(tf.string, name="tf_example")
            features = v1.io.parse_example(
                serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)}
            )
            features["x"].set_shape([None, 1])
            x = tf.identity(features["x"], name="x")
            y = tf.add(tf.multiply(a, x), bv, name="y")
            classes = tf.tile(tf.constant([["low", "high"]]), [tf.shape(y)[0], 1], name="classes")
            scores = tf.concat([1.0 - y / 10.0, y / 10.0], axis=1, name="scores2")
            sess.run(v1.global_variables_initializer())
            info = v1.saved_model.utils.build_tensor_info
            sig = v1.saved_model.signature_def_utils.build_signature_def
            predict = sig({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
            classify = sig(
                {"inputs": info(serialized)}, {"scores": info(y)}, "tensorflow/serving/classify"
            )
            classify2 = sig(
                {"inputs": info(serialized)},
                {"classes": info(classes), "scores": info(scores)},
                "tensorflow/serving/classify",
            )
            regress = sig(
                {"inputs": info(serialized)}, {"outputs": info(y)}, "tensorflow/serving/regress"
            )
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                sess,
                ["serve"],
                signature_def_map={
                    "serving_default": predict,
                    "classify_x_to_y": classify,
                    "classify_x_to_classes": classify2,
                    "regress_x_to_y": regress,
                    "tensorflow/serving/regress": regress,
                    "tensorflow/serving/classify": classify,
                },
            )
            builder.save()
    return str(base)


def export_strings_tf1(base: str | os.PathLike, version: int = 1) -> str:
    """String model: input `text` (DT_STRING [-1]); outputs `echo_bytes` (same bytes, written as
    b64 over REST), `upper` (a plain string) and `length` (int32)."""
    tf = _tf()
    v1 = tf.compat.v1
    path = Path(base) / str(version)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        text = v1.placeholder(tf.string, shape=[None], name="text")
        echo = tf.identity(text, name="echo")
        upper = tf.strings.upper(text, name="upper")
        length = tf.strings.length(text, name="length")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def(
            {"text": info(text)},
            {"echo_bytes": info(echo), "upper": info(upper), "length": info(length)},
            "tensorflow/serving/predict",
        )
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={"serving_default": sig}
        )
        builder.save()
    return str(base)


def export_keras_mlp(
    base: str | os.PathLike,
    version: int = 1,
    *,
    inputs: int = 4,
    hidden: int = 8,
    outputs: int = 3,
    seed: int = 0,
) -> str:
    """A Keras 3 MLP exported with `model.export` (TF2 SavedModel): input `features`, output `output_0`."""
    _tf()
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((inputs,), name="features")
    hid = keras.layers.Dense(hidden, activation="relu")(inp)
    out = keras.layers.Dense(outputs, activation="softmax")(hid)
    model = keras.Model(inp, out)
    model.export(str(Path(base) / str(version)), verbose=False)
    return str(base)


def copy_version(base: str | os.PathLike, src: int, dst: int) -> None:
    """Add version `dst` atomically (copy beside, then rename, as users are told to do)."""
    tmp = Path(base) / f".tmp-{dst}"
    shutil.copytree(Path(base) / str(src), tmp)
    os.rename(tmp, Path(base) / str(dst))


def write_corrupt_version(base: str | os.PathLike, version: int) -> None:
    path = Path(base) / str(version)
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(b"\x08\x01this is not a SavedModel proto\xff\xff")


# -- the server process ----------------------------------------------------------------------------
class ServerProcess:
    """`tfs-model-server` as a child process on free loopback ports; a context manager."""

    def __init__(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        grpc: bool = True,
        rest: bool = True,
    ) -> None:
        self.grpc_port = free_port() if grpc else 0
        self.rest_port = free_port() if rest else 0
        self.args = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", *args]
        self.env = {
            **os.environ,
            "TFS_BIND_HOST": "127.0.0.1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {}),
        }
        fd, self._log_path = tempfile.mkstemp(prefix="tfs-server-", suffix=".log")
        os.close(fd)
        self.proc: subprocess.Popen | Launched | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        with open(self._log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def start(self) -> ServerProcess:
        with open(self._log_path, "wb") as log:
            self.proc = start_server(SERVER_CMD, self.args, env=self.env, stdout=log)
        return self

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_until_ready(self, timeout_s: float = 120) -> None:
        """Until the REST port answers (TF Serving opens ports after the initial model loads)."""

        def ready() -> bool:
            self.check_running()
            if self.rest_port:
                with urllib.request.urlopen(self.rest_url + "/v1/models/__probe__", timeout=2):
                    pass
            else:
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=2):
                    pass
            return True

        def probe() -> bool:
            try:
                return ready()
            except urllib.error.HTTPError:
                return True  # any HTTP answer means the server is up

        wait_until(
            probe,
            timeout_s=timeout_s,
            what=f"server on ports {self.grpc_port}/{self.rest_port}",
            logs=self.logs,
        )

    def check_running(self) -> None:
        """ServerExited (with the log tail) when the process has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerExited(f"server exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")

    def status(self, model: str) -> dict[str, Any]:
        self.check_running()
        try:
            with urllib.request.urlopen(f"{self.rest_url}/v1/models/{model}", timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def version_states(self, model: str) -> dict[int, str]:
        doc = self.status(model)
        return {int(v["version"]): v["state"] for v in doc.get("model_version_status", [])}

    def wait_until_available(
        self, model: str, versions: Iterable[int] | None = None, timeout_s: float = 120
    ) -> dict[int, str]:
        wanted = set(versions) if versions is not None else None

        def ok() -> dict[int, str] | None:
            states = self.version_states(model)
            if wanted is None:
                return states if "AVAILABLE" in states.values() else None
            return states if all(states.get(v) == "AVAILABLE" for v in wanted) else None

        return wait_until(
            ok,
            timeout_s=timeout_s,
            what=f"model {model} versions {sorted(wanted) if wanted else 'any'} AVAILABLE",
            logs=self.logs,
        )

    def wait_until_states(
        self, model: str, expected: dict[int, str], timeout_s: float = 60
    ) -> dict[int, str]:
        def ok() -> dict[int, str] | None:
            states = self.version_states(model)
            return states if all(states.get(v) == s for v, s in expected.items()) else None

        return wait_until(
            ok, timeout_s=timeout_s, what=f"model {model} states {expected}", logs=self.logs
        )

    def stop(self, timeout_s: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        with contextlib.suppress(OSError):
            os.unlink(self._log_path)
        return self.proc.returncode


def run_server_expect_exit(
    args: list[str], *, timeout_s: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the server with args that must make it exit (bad flags, busy port...)."""
    full_env = {
        **os.environ,
        "TFS_BIND_HOST": "127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(env or {}),
    }
    return subprocess.run(
        SERVER_CMD + args, capture_output=True, text=True, timeout=timeout_s, env=full_env
    )
