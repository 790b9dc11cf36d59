"""`tfsctl web`: a static page that runs a TF.js export in the browser, and its tiny server."""

from orchestrator.web.server import WebApp, model_info

__all__ = ["WebApp", "model_info"]
