"""`tfsctl predict`: one request to a deployment, for quick checks.

The data is what TF Serving's REST API takes ({"instances": ...}, {"inputs": ...}), a plain
{input name: value} object, or a bare value for a one-input signature. REST by default; gRPC
with --grpc (or --address). Only orchestrator.client is needed: no TensorFlow is imported.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.cli._common import output_option, print_json, print_table
from orchestrator.errors import OrchestratorError, RuntimeFailure


def _bytes_leaves(obj: Any) -> Any:
    """{"b64": "..."} anywhere in the data becomes bytes (TF Serving's binary form)."""
    if isinstance(obj, list):
        return [_bytes_leaves(o) for o in obj]
    if isinstance(obj, dict):
        if set(obj) == {"b64"} and isinstance(obj["b64"], str):
            return base64.b64decode(obj["b64"])
        return {k: _bytes_leaves(v) for k, v in obj.items()}
    return obj


def parse_data(data: Any) -> tuple[Any, str | None]:
    """(inputs for Client.predict, signature named in the data) from a request-like JSON."""
    if not isinstance(data, dict):
        return _bytes_leaves(data), None
    signature = data.get("signature_name")
    if "instances" in data and "inputs" in data:
        raise click.BadParameter("use 'instances' or 'inputs', not both", param_hint="--data")
    if "instances" in data:
        rows = data["instances"]
        if rows and all(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
            names = list(rows[0])
            if any(set(r) != set(names) for r in rows):
                raise click.BadParameter("every instance needs the same keys", param_hint="--data")
            return {n: _bytes_leaves([r[n] for r in rows]) for n in names}, signature
        return _bytes_leaves(rows), signature
    if "inputs" in data:
        return _bytes_leaves(data["inputs"]), signature
    rest = {k: v for k, v in data.items() if k != "signature_name"}
    return _bytes_leaves(rest), signature


def _read(data: str | None, file: Path | None) -> Any:
    if (data is None) == (file is None):
        raise click.UsageError("pass the request as --data JSON or -f FILE (one of them)")
    if file is not None:
        where = "stdin" if str(file) == "-" else str(file)
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else f"not UTF-8 text ({e.reason})"
            raise click.BadParameter(f"cannot read {where}: {why}", param_hint="-f/--file") from None
    else:
        text, where = data or "", "--data"
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON ({e})", param_hint=where) from None


def _endpoint(name: str, use_grpc: bool) -> str:
    from orchestrator.state import StateStore

    state = StateStore().load(name)
    if state is None:
        raise RuntimeFailure(
            f"no deployment named {name!r}",
            fix=f"run `tfsctl deploy {name}` or pass --url (REST) / --address (gRPC)",
        )
    key = "grpc_address" if use_grpc else "rest_url"
    endpoint = state.get(key)
    if not endpoint:
        raise RuntimeFailure(f"deployment {name!r} has no {key}", fix="pass --url or --address")
    return str(endpoint)


def _jsonable(arr: Any) -> Any:
    if arr.dtype == object:

        def one(v: Any) -> Any:
            if isinstance(v, bytes):
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(v).decode("ascii")}
            return v

        import numpy as np

        flat = [one(v) for v in arr.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(arr.shape).tolist()
    if arr.dtype.kind == "c":
        return [[z.real, z.imag] for z in arr.ravel().tolist()]
    if arr.dtype.kind not in "biuf":
        arr = arr.astype("float32")
    return arr.tolist()


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@click.command()
@click.argument("name")
@click.option("--data", "-d", help='Request JSON: {"instances": ...}, {"inputs": ...} or a value.')
@click.option(
    "--file",
    "-f",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Read the JSON from FILE (- for stdin).",
)
@click.option("--grpc", "use_grpc", is_flag=True, help="Call the gRPC API instead of REST.")
@click.option("--version", "version", type=int, help="Model version to call.")
@click.option("--label", help="Version label to call (e.g. stable, canary).")
@click.option("--signature", "-s", help="Signature name (default serving_default).")
@click.option("--model", help="Model name, when it differs from the deployment NAME.")
@click.option(
    "--url", help="REST endpoint, e.g. http://127.0.0.1:8501 (skips the deployment state)."
)
@click.option("--address", help="gRPC endpoint, e.g. 127.0.0.1:8500 (implies --grpc).")
@click.option(
    "--timeout", "timeout_s", type=float, default=30.0, show_default=True, help="Seconds."
)
@output_option
def predict(
    name: str,
    data: str | None,
    file: Path | None,
    use_grpc: bool,
    version: int | None,
    label: str | None,
    signature: str | None,
    model: str | None,
    url: str | None,
    address: str | None,
    timeout_s: float,
    output: str,
) -> None:
    """Send one predict request to deployment NAME and print the outputs.

    \b
    tfsctl predict demo --data '{"instances": [[1.0, 2.0, 3.0, 4.0]]}'
    tfsctl predict demo -f request.json --grpc --label canary -o json
    """
    if version is not None and label is not None:
        raise click.UsageError("--version and --label select the same thing: pass one")
    if url and address:
        raise click.UsageError("--url is REST and --address is gRPC: pass one")
    inputs, data_signature = parse_data(_read(data, file))
    use_grpc = use_grpc or address is not None
    if url and use_grpc:
        raise click.UsageError("--url is a REST endpoint; use --address with --grpc")
    endpoint = address or url or _endpoint(name, use_grpc)

    from orchestrator.client import GrpcClient, RestClient

    client: Any = (
        GrpcClient(endpoint, timeout_s=timeout_s)
        if use_grpc
        else RestClient(endpoint, timeout_s=timeout_s)
    )
    try:
        with client:
            outputs = client.predict(
                model or name,
                inputs,
                version=version,
                label=label,
                signature=signature or data_signature,
                timeout_s=timeout_s,
            )
    except (TypeError, ValueError) as e:  # data the client could not encode
        raise OrchestratorError(f"cannot send this data: {e}") from e
    if output == "json":
        print_json({"outputs": {k: _jsonable(v) for k, v in outputs.items()}})
        return
    rows = [
        (k, str(v.dtype) if v.dtype != object else "string", list(v.shape), _preview(_jsonable(v)))
        for k, v in outputs.items()
    ]
    print_table(
        f"{model or name} via {'gRPC' if use_grpc else 'REST'} {endpoint}",
        ["output", "dtype", "shape", "values"],
        rows,
    )


COMMANDS = [predict]
