"""Reference server for bench/serve_rest.py: the hand-written Flask app people write today.

    MODEL_PATH=/path/to/savedmodel/1 gunicorn -w 1 --threads 8 -b 127.0.0.1:PORT bench.flask_ref:app

Loads the SavedModel with `tf.saved_model.load` and answers `{"prediction": ...}`. Same URL as TF
Serving's predict so one load generator drives both.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # `make bench` runs every bench/*.py; this one is a gunicorn app
    print("bench/flask_ref.py is the reference app that bench/serve_rest.py starts under gunicorn")
    sys.exit(0)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request

app = Flask(__name__)
_model = tf.saved_model.load(os.environ["MODEL_PATH"])
_infer = _model.signatures["serving_default"]
_input = next(iter(_infer.structured_input_signature[1]))


@app.post("/v1/models/<name>:predict")
def predict(name: str):
    doc = request.get_json(force=True)
    x = tf.constant(np.asarray(doc["instances"], dtype=np.float32))
    out = _infer(**{_input: x})
    y = next(iter(out.values())).numpy()
    return jsonify({"prediction": y.tolist()})


@app.get("/health")
def health():
    return "ok"
