"""Runtimes realise a Plan as running TF Serving replicas: `local` (embedded server), `docker`."""

from __future__ import annotations

from orchestrator.runtime.base import Deployment, ReplicaStatus, Runtime

__all__ = ["Deployment", "ReplicaStatus", "Runtime"]
