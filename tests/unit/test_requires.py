"""The one rule for missing tools: under CI the test fails, elsewhere it skips naming the install."""

from __future__ import annotations

import pytest

from tests.helpers.requires import in_ci, require


@pytest.mark.parametrize(("value", "ci"), [("true", True), ("1", True), ("yes", True), ("", False),
                                           ("false", False), ("0", False)])
def test_in_ci(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="haproxy is not installed; install it with: apt-get"):
        require(None, "haproxy", "apt-get install -y haproxy")


def test_missing_tool_skips_elsewhere_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install it with: apt-get install -y haproxy"):
        require("", "haproxy", "apt-get install -y haproxy")
    require("/usr/sbin/haproxy", "haproxy", "never shown")  # present: neither
