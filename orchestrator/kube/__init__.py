"""Kubernetes: manifests rendered from Specs (pure), and later the runtime that applies them."""
