"""Which servers a launcher may fork: orchestrator.launch.fingerprint / mismatch (no processes)."""

from __future__ import annotations

import sys

from orchestrator.launch import fingerprint, mismatch

BASE = {"PATH": "/usr/bin", "TF_ENABLE_ONEDNN_OPTS": "0", "TFS_BIND_HOST": "127.0.0.1"}


def test_the_same_environment_matches_and_run_time_variables_are_free() -> None:
    mine = fingerprint(BASE)
    assert mine["python"].startswith(sys.executable)
    theirs = fingerprint(
        {**BASE, "TFS_BIND_HOST": "0.0.0.0", "HOME": "/x", "TFS_LOG_FORMAT": "json"}
    )
    assert mismatch(mine, theirs) is None


def test_an_import_time_variable_that_differs_is_named() -> None:
    mine = fingerprint(BASE)
    for changed in ({"TF_ENABLE_ONEDNN_OPTS": "1"}, {"CUDA_VISIBLE_DEVICES": ""},
                    {"OMP_NUM_THREADS": "1"}, {"PYTHONPATH": "/elsewhere"}):  # fmt: skip
        why = mismatch(mine, fingerprint({**BASE, **changed}))
        assert why is not None and next(iter(changed)) in why, (changed, why)
    missing = dict(BASE)
    del missing["TF_ENABLE_ONEDNN_OPTS"]
    assert "TF_ENABLE_ONEDNN_OPTS" in (mismatch(mine, fingerprint(missing)) or "")


def test_another_interpreter_or_install_is_refused() -> None:
    mine = fingerprint(BASE)
    assert "python differs" in (mismatch(mine, {**mine, "python": "/other/python (/other)"}) or "")
    assert "orchestrator differs" in (mismatch(mine, {**mine, "orchestrator": "/other/src"}) or "")


def test_log_levels_and_what_tensorflow_sets_as_it_loads_match() -> None:
    mine = fingerprint(BASE)
    assert mismatch(mine, fingerprint({**BASE, "TF_CPP_MIN_LOG_LEVEL": "3"})) is None
    loaded = {"TPU_ML_PLATFORM": "Tensorflow"}  # set by `import tensorflow` in the client
    theirs = fingerprint({**BASE, **loaded})
    assert mismatch(mine, theirs, loaded) is None
    assert "TPU_ML_PLATFORM" in (mismatch(mine, theirs) or "")
    assert "TPU_ML_PLATFORM" in (
        mismatch(mine, fingerprint({**BASE, "TPU_ML_PLATFORM": "x"}), loaded) or ""
    )


def test_only_a_plain_server_command_is_forked() -> None:
    """A wrapper in the command (taskset, nice, another interpreter) must run: it is executed."""
    import os

    from orchestrator.launch import is_plain_server
    from orchestrator.runtime.local import server_command

    here = os.path.dirname(sys.executable)
    assert is_plain_server([os.path.join(here, "tfs-model-server")])
    assert is_plain_server([sys.executable, "-m", "orchestrator.server.main"])
    assert is_plain_server(server_command())
    assert not is_plain_server(
        ["taskset", "-c", "0", sys.executable, "-m", "orchestrator.server.main"]
    )
    assert not is_plain_server(["/usr/bin/python3", "-m", "orchestrator.server.main"])
    assert not is_plain_server([sys.executable, "-m", "orchestrator.other"])
    assert not is_plain_server(["/elsewhere/bin/tfs-model-server"])
