"""Canary analysis on a cluster reads each pod's TF Serving counters through the pod proxy;
pods come and go during a replica-ratio split, and the totals must never run backwards."""

from __future__ import annotations

from orchestrator.rollout.target import PodProxyCounters, window


def text(ok: int, failed: int, model: str = "m") -> str:
    return (f':tensorflow:serving:request_count{{model_name="{model}",status="OK"}} {ok}\n'
            f':tensorflow:serving:request_count{{model_name="{model}",status="INVALID_ARGUMENT"}} {failed}\n'
            f':tensorflow:serving:request_latency_count{{model_name="{model}",API="predict",entrypoint="REST"}} {ok}\n'
            f':tensorflow:serving:request_latency_bucket{{model_name="{model}",API="predict",entrypoint="REST",'
            f'le="+Inf"}} {ok}\n')


class Pods:
    """Stands in for KubernetesRuntime.pod_metrics (a cluster cannot run here)."""

    def __init__(self) -> None:
        self.by_role: dict[str, dict[str, str]] = {"stable": {}, "canary": {}}
        self.asked: list[tuple[str, str | None]] = []

    def pod_metrics(self, name: str, role: str | None = None) -> dict[str, str]:
        self.asked.append((name, role))
        return dict(self.by_role[role or "stable"])


def test_counts_come_from_every_pod_of_each_role() -> None:
    pods = Pods()
    pods.by_role = {"stable": {"s0": text(10, 0), "s1": text(5, 0)}, "canary": {"c0": text(4, 2)}}
    counters = PodProxyCounters(pods, "m")
    first = counters.sample([])
    assert (first["stable"].requests, first["stable"].errors) == (15, 0)
    assert (first["canary"].requests, first["canary"].errors) == (6, 2)
    assert first["canary"].source == "tf-serving request_count"
    assert pods.asked == [("m", "stable"), ("m", "canary")]


def test_a_vanishing_pod_takes_nothing_away_and_a_restarted_one_starts_at_zero() -> None:
    pods = Pods()
    pods.by_role["stable"] = {"s0": text(10, 0), "s1": text(5, 1)}
    counters = PodProxyCounters(pods, "m")
    before = counters.sample([])["stable"]
    # s1 scaled away (a replica-ratio step), s0 served 3 more, a new pod s2 served 2
    pods.by_role["stable"] = {"s0": text(13, 0), "s2": text(2, 0)}
    after = counters.sample([])["stable"]
    w = window(after, before)
    assert (w.requests, w.errors) == (5, 0)
    # s0 restarted: its counter starts again from 0, so its whole count is new
    pods.by_role["stable"] = {"s0": text(1, 1), "s2": text(2, 0)}
    again = window(counters.sample([])["stable"], after)
    assert (again.requests, again.errors) == (2, 1)
