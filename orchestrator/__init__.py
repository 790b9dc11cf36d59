"""tfserving-orchestrator: from a trained TensorFlow model to TF Serving in production.

Importing the package is cheap: nothing here imports TensorFlow, so the client
(`orchestrator.client`) stays usable from small services.
"""

__version__ = "0.1.0"
