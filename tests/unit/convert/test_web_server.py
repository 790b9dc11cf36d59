"""The page's server on loopback: routes, signature info, no files outside its folders."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestrator.convert import ConvertError
from orchestrator.web import WebApp, model_info

MODEL_JSON = {
    "format": "graph-model",
    "convertedBy": "TensorFlow.js Converter v4.22.0",
    "signature": {
        "inputs": {"x": {"name": "x:0", "dtype": "DT_FLOAT",
                         "tensorShape": {"dim": [{"size": "-1"}, {"size": "8"}]}}},
        "outputs": {"output_0": {"name": "Identity:0", "dtype": "DT_FLOAT",
                                 "tensorShape": {"dim": [{"size": "-1"}, {"size": "3"}]}}},
    },
    "modelTopology": {},
    "weightsManifest": [],
}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tfjs"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(MODEL_JSON))
    (folder / "group1-shard1of1.bin").write_bytes(b"\0" * 16)
    (tmp_path / "secret.txt").write_text("not served")
    return folder


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "tf.min.js"
    path.write_text("/* tfjs */")
    return path


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_model_info_reads_the_signature(model_dir: Path) -> None:
    info = model_info(model_dir)
    assert info["inputs"] == {"x": {"dtype": "float32", "shape": [-1, 8], "node": "x:0"}}
    assert info["outputs"]["output_0"]["node"] == "Identity:0"
    with pytest.raises(ConvertError, match="tfsctl convert"):
        model_info(model_dir.parent)


def test_routes(model_dir: Path, bundle: Path) -> None:
    with WebApp(model_dir, model="x", version=3, bundle=bundle) as app:
        assert app.url.startswith("http://127.0.0.1:")
        status, ctype, body = get(app.url)
        assert status == 200 and ctype.startswith("text/html") and b"vendor/tf.min.js" in body
        assert b"cdn" not in body.lower()
        status, ctype, body = get(app.url + "static/app.js")
        assert status == 200 and ctype.startswith("text/javascript")
        assert get(app.url + "vendor/tf.min.js")[2] == b"/* tfjs */"
        assert get(app.url + "model/group1-shard1of1.bin")[2] == b"\0" * 16
        status, ctype, body = get(app.url + "api/info")
        info = json.loads(body)
        assert (info["model"], info["version"], info["format"]) == ("x", 3, "tfjs")
        assert info["inputs"]["x"]["shape"] == [-1, 8]


@pytest.mark.parametrize(
    "path", ["model/../secret.txt", "model/%2e%2e%2fsecret.txt", "static/", "model/", "nope"]
)
def test_nothing_else_is_served(model_dir: Path, bundle: Path, path: str) -> None:
    with WebApp(model_dir, model="x", bundle=bundle) as app:
        assert get(app.url + path)[0] == 404


def test_missing_bundle_says_how_to_install(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"install_convert_deps\.sh"):
        WebApp(model_dir, model="x", bundle=tmp_path / "absent.js")


def test_stop_is_idempotent_and_port_conflicts_are_explained(model_dir: Path, bundle: Path) -> None:
    app = WebApp(model_dir, model="x", bundle=bundle).start()
    port = int(app.url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(ConvertError, match="--port"):
        WebApp(model_dir, model="x", bundle=bundle, port=port).start()
    app.stop()
    app.stop()
    with pytest.raises(RuntimeError):
        _ = app.url
