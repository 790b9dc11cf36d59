"""TF2 test models written by `tf.saved_model.save`, the way TF Serving's own TF2 test models are.

`tf.saved_model.save` gives every signature its own input placeholder, which is what
MultiInference must cope with (each task's signature is fed the examples on its own input).
"""

from __future__ import annotations

import os
from pathlib import Path


def export_half_plus_two_tf2(base: str | os.PathLike, version: int = 123) -> str:
    """y = 0.5 * x + 2 as a tf.Module: serving_default (x -> y, float [1]), regress_x_to_y and
    classify_x_to_y (serialized tf.Examples with feature x -> outputs / scores)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")

        def _y(self, x):  # type: ignore[no-untyped-def]
            return self.a * x + self.b

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def predict(self, x):  # type: ignore[no-untyped-def]
            return {"y": self._y(x)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, serialized):  # type: ignore[no-untyped-def]
            return {"outputs": self._y(tf.io.parse_example(serialized, spec)["x"])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, serialized):  # type: ignore[no-untyped-def]
            return {"scores": self._y(tf.io.parse_example(serialized, spec)["x"])}

    module = HalfPlusTwo()
    tf.saved_model.save(
        module,
        str(Path(base) / str(version)),
        signatures={
            "serving_default": module.predict,
            "regress_x_to_y": module.regress,
            "classify_x_to_y": module.classify,
        },
    )
    return str(base)
