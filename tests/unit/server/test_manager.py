"""Manager semantics with a fake loader: policies, polling, failures, labels, reload."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.server.config import ModelConfig, VersionPolicy
from orchestrator.server.manager import Manager
from orchestrator.server.runner import LoadError
from orchestrator.server.status import ServingStatus


class Fake:
    def __init__(self, name, version, path):
        self.name, self.version, self.path = name, version, path
        self.inflight = 0
        self.closed = False

    def close(self):
        self.closed = True


def loader(bad=()):
    def load(name, version, path):
        if version in bad:
            raise LoadError("DATA_LOSS", f"broken {version}")
        return Fake(name, version, path)

    return load


def make(tmp_path, versions):
    base = tmp_path / "m"
    for v in versions:
        (base / str(v)).mkdir(parents=True)
    (base / "not_a_version").mkdir(parents=True, exist_ok=True)
    return base


async def settle(manager, predicate, what):
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(
        f"never reached: {what}: {[(v.version, v.state) for e in manager.models.values() for v in e.versions.values()]}"
    )


def states(manager, name="m"):
    return {vs.version: vs.state for vs in manager.status(name)}


def test_latest_policy_and_polling(tmp_path):
    base = make(tmp_path, [1, 2])

    async def main():
        m = Manager(load=loader(), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(base))])
        assert states(m) == {2: "AVAILABLE"}
        assert m.resolve("m").version == 2
        (base / "3").mkdir()
        await m.poll_once()
        await settle(m, lambda: states(m) == {3: "AVAILABLE", 2: "END"}, "3 up, 2 down")
        with pytest.raises(ServingStatus, match=r"Specific\(m, 2\)"):
            m.resolve("m", 2)

    asyncio.run(main())


def test_failed_version_is_reported_and_others_serve(tmp_path):
    base = make(tmp_path, [1, 2])

    async def main():
        m = Manager(load=loader(bad={2}), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(base), VersionPolicy("all"))])
        st = {vs.version: vs for vs in m.status("m")}
        assert st[1].state == "AVAILABLE"
        assert (st[2].state, st[2].error_code, st[2].error_message) == (
            "END",
            "DATA_LOSS",
            "broken 2",
        )
        assert m.resolve("m").version == 1

    asyncio.run(main())


def test_labels_and_reload(tmp_path):
    base = make(tmp_path, [1, 2])

    async def main():
        m = Manager(load=loader(), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(base), VersionPolicy("all"), {"stable": 1})])
        assert m.resolve("m", label="stable").version == 1
        with pytest.raises(ServingStatus, match="Unrecognized servable version label: x"):
            m.resolve("m", label="x")
        with pytest.raises(ServingStatus) as e:
            await m.apply_config([ModelConfig("m", str(base), VersionPolicy("all"), {"stable": 9})])
        assert e.value.code == "FAILED_PRECONDITION"
        await m.apply_config([ModelConfig("other", str(base))])
        assert "m" not in m.models
        await settle(m, lambda: all(s == "END" for s in states(m).values()), "m unloaded")
        with pytest.raises(ServingStatus, match=r"Latest\(m\)"):
            m.resolve("m")

    asyncio.run(main())


def test_missing_base_path(tmp_path):
    async def main():
        m = Manager(load=loader(), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(tmp_path / "nope"))])
        with pytest.raises(ServingStatus, match="Could not find any versions of model m"):
            m.status("m")
        assert m.availability() == {"m": False}

    asyncio.run(main())


def test_base_path_gone_keeps_serving_and_says_so(tmp_path):
    base = make(tmp_path, [1])

    async def main():
        m = Manager(load=loader(), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(base), labels={"stable": 1})])
        moved = tmp_path / "moved"
        base.rename(moved)
        for _ in range(4):  # TF Serving's poll never unloads for a missing base path
            await m.poll_once()
        await asyncio.sleep(0.05)
        assert states(m) == {1: "AVAILABLE"}
        assert m.resolve("m", label="stable").version == 1
        [vs] = m.status("m")
        assert (vs.error_code, vs.error_message) == (
            "OK",
            f"Could not find base path {base} for servable m",
        )
        moved.rename(base)
        await m.poll_once()
        assert m.status("m")[0].error_message == ""

    asyncio.run(main())


def test_version_folder_replaced_by_a_file_keeps_serving(tmp_path):
    base = make(tmp_path, [1])

    async def main():
        m = Manager(load=loader(), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(base))])
        (base / "1").rmdir()
        (base / "1").write_text("not a folder")
        await m.poll_once()
        await asyncio.sleep(0.05)
        assert states(m) == {1: "AVAILABLE"}
        assert m.status("m")[0].error_message == f"version entry {base / '1'} is not a directory"

    asyncio.run(main())


def test_reload_to_a_missing_base_path_is_refused_and_changes_nothing(tmp_path):
    base = make(tmp_path, [1])

    async def main():
        m = Manager(load=loader(), executor=ThreadPoolExecutor(1), poll_wait_s=0)
        await m.apply_config([ModelConfig("m", str(base), labels={"stable": 1})])
        nope = tmp_path / "nope"
        with pytest.raises(ServingStatus) as e:
            await m.apply_config([ModelConfig("m", str(nope), labels={"stable": 1})])
        assert e.value.code == "NOT_FOUND"
        assert e.value.message == (
            f"Could not find base path {nope} for servable m. The new config was not applied; "
            "the loaded versions keep serving"
        )
        assert states(m) == {1: "AVAILABLE"}
        assert m.resolve("m", label="stable").version == 1
        assert m.models["m"].config.base_path == str(base)

    asyncio.run(main())
