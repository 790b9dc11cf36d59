"""Hostile REST input: every bad body gets a 4xx JSON answer, never a 5xx or a memory blow-up.

The shared server limits bodies to 1 MB (conftest.MAX_BODY); the gzip bomb below inflates to
512 MiB, so a server that inflated before checking would grow by hundreds of MB.
"""

from __future__ import annotations

import json
import socket
import zlib

import pytest
import requests

from tests.helpers.server import wait_until
from tests.integration.server.conftest import MAX_BODY

pytestmark = pytest.mark.integration
HPT = "/v1/models/half_plus_two"


def post(server, path: str, body: bytes | str, **kw) -> requests.Response:
    return requests.post(server.rest_url + path, data=body, timeout=60, **kw)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def still_serves(server) -> None:
    r = post(server, HPT + "/versions/1:predict", '{"instances": [1.0]}')
    assert r.json() == {"predictions": [2.5]}


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '{"instances":' + "[" * 65 + "1" + "]" * 65 + "}",
            "JSON tensor is nested 65 levels deep",
        ),
        (
            '{"inputs":' + "[" * 65 + "1" + "]" * 65 + "}",
            "JSON tensor is nested 65 levels deep",
        ),
        (
            '{"instances":' + "[" * 10_000 + "1" + "]" * 10_000 + "}",
            "the document is nested deeper than 1024 levels",
        ),
        (
            '{"instances":[1.0], "x":' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "}",
            "the document is nested deeper than 1024 levels",
        ),
        (
            '{"instances": 5, "x":' + "[" * 1000 + "]" * 1000 + "}",
            "Expecting 'instances' to be an list/array",
        ),
    ],
    ids=["rows-65", "columns-65", "rows-10000", "object-beside-instances", "error-echoes-deep"],
)
def test_deep_nesting_is_a_400(server, body, message):
    r = post(server, HPT + ":predict", body)
    assert r.status_code == 400, r.text[:300]
    assert message in r.json()["error"]
    still_serves(server)


@pytest.mark.parametrize(
    "body, offset",
    [
        ('{"instances":[' + "1" * 5000 + "]}", 14),
        ('{"inputs":[1' + "0" * 400 + "]}", 11),
        ('{"instances":[1' + "0" * 400 + "]}", 14),
        ('{"inputs":[1e999]}', 11),
        ('{"inputs":[-1e999]}', 11),
        ('{"inputs":[NaN, 1e999]}', 16),  # the stdlib path (NaN) says the same
        ('{"inputs":[Infinity, -' + "9" * 5000 + "]}", 21),
    ],
)
def test_numbers_too_big_for_a_double(server, body, offset):
    r = post(server, HPT + ":predict", body)
    assert (r.status_code, r.json()) == (
        400,
        {"error": f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"},
    )


def test_huge_integer_that_fits_a_double_is_a_float(server):
    r = post(server, HPT + "/versions/1:predict", '{"instances":[1' + "0" * 30 + "]}")
    assert r.status_code == 200 and r.json()["predictions"][0] == pytest.approx(5e29, rel=1e-6)


def test_version_in_non_ascii_digits_is_malformed(server):
    path = HPT + "/versions/\u0661\u0662\u0663"
    r = post(server, path + ":predict", '{"instances":[1.0]}')
    assert r.status_code == 400 and r.json()["error"].startswith("Malformed request: POST")
    r = requests.get(server.rest_url + path, timeout=30)
    assert r.status_code == 400 and r.json()["error"].startswith("Malformed request: GET")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies(server, encoding):
    doc = b'{"instances": [1.0, 2.0]}'
    wbits = 31 if encoding == "gzip" else 15
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    good = c.compress(doc) + c.flush()
    r = post(server, HPT + "/versions/1:predict", good, headers={"Content-Encoding": encoding})
    assert r.json() == {"predictions": [2.5, 3.0]}
    r = post(server, HPT + ":predict", b"not compressed", headers={"Content-Encoding": encoding})
    assert r.status_code == 400
    assert r.json()["error"].startswith(f"Failed to decompress the {encoding} request body")
    r = post(server, HPT + ":predict", good[:-6], headers={"Content-Encoding": encoding})
    assert r.status_code == 400 and "ends before its end marker" in r.json()["error"]


def test_raw_deflate_is_accepted(server):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(b'{"instances": [1.0]}') + c.flush()
    r = post(server, HPT + "/versions/1:predict", body, headers={"Content-Encoding": "deflate"})
    assert r.json() == {"predictions": [2.5]}


def test_unsupported_encoding_is_a_json_415(server):
    r = post(server, HPT + ":predict", b"\x0b\x02\x80{}\x03", headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    assert r.headers["Content-Type"].startswith("application/json")
    assert "Content-Encoding 'br' is not supported" in r.json()["error"]


def _gzip_of_zeros(mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(c.compress(block) for _ in range(mib)) + c.flush()


def test_gzip_bomb_is_refused_while_inflating(server):
    bomb = _gzip_of_zeros(512)  # ~0.5 MB on the wire: under the 1 MB body limit
    assert len(bomb) < MAX_BODY
    before = rss_mib(server.proc.pid)
    for _ in range(3):
        r = post(server, HPT + ":predict", bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413
        assert r.json()["error"] == (
            f"Decompressed request body exceeds the limit of {MAX_BODY} bytes"
        )
    grown = rss_mib(server.proc.pid) - before
    assert grown < 64, f"server RSS grew by {grown:.0f} MiB on a refused 512 MiB bomb"
    # chunked (no Content-Length): the same limit holds on the stream
    r = post(server, HPT + ":predict", iter([bomb]), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    still_serves(server)


def test_client_gone_mid_body_logs_one_quiet_line(server):
    marker = "/v1/models/half_plus_two/labels/stable:predict"
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as s:
        s.sendall(
            f"POST {marker} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode()
            + b'{"instances": ['
        )
    line = wait_until(
        lambda: [ln for ln in server.logs().splitlines() if marker in ln and "went away" in ln],
        timeout_s=30,
        what="the server's line about the client that went away",
    )
    assert len(line) == 1 and " INFO " in line[0]
    logs = server.logs()
    assert "Traceback" not in logs[logs.index(marker) :]
    still_serves(server)


def test_too_many_inputs(server):
    doc = {"inputs": {f"x{i}": [1.0] for i in range(1025)}}
    r = post(server, "/v1/models/mlp:predict", json.dumps(doc))
    assert r.status_code == 400
    assert "Request names 1025 inputs; at most 1024" in r.json()["error"]


def test_init_op_signature_is_a_400(server):
    r = post(
        server,
        "/v1/models/mlp:predict",
        '{"signature_name": "__saved_model_init_op", "instances": [[1, 2, 3, 4]]}',
    )
    assert (r.status_code, r.json()) == (
        400,
        {"error": "Failed to get input map for signature: __saved_model_init_op"},
    )
