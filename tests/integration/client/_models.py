"""Models the client tests export with TensorFlow (imported inside functions: it is slow)."""

from __future__ import annotations

from pathlib import Path

# Signature "id_<name>" of the "dtypes" model: y = identity(x) for x of this TF dtype.
DTYPE_NAMES = (
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "string",
    "complex64",
    "complex128",
)


def export_scale(version_dir: Path, k: float) -> None:
    """serving_default: x float32 [None, 3] -> y = k*x; "two": (a, b) -> sum, diff."""
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k = tf.Variable(k, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * self.k}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="a"),
                tf.TensorSpec([None], tf.float32, name="b"),
            ]
        )
        def two(self, a, b):
            return {"sum": a + b, "diff": a - b}

    module = Scale()
    tf.saved_model.save(
        module, str(version_dir), signatures={"serving_default": module.serve, "two": module.two}
    )


def export_dtypes(version_dir: Path) -> None:
    import tensorflow as tf

    class Identity(tf.Module):
        pass

    module = Identity()
    signatures = {}
    for name in DTYPE_NAMES:
        dtype = tf.as_dtype(name)

        def make(dtype=dtype):
            @tf.function(input_signature=[tf.TensorSpec(None, dtype, name="x")])
            def identity(x):
                return {"y": tf.identity(x)}

            return identity

        fn = make()
        setattr(module, f"id_{name}", fn)
        signatures[f"id_{name}"] = fn
    signatures["serving_default"] = signatures["id_float32"]
    tf.saved_model.save(module, str(version_dir), signatures=signatures)


def export_all(root: Path) -> str:
    """Export every model under `root`; return the model config file's text."""
    from tests.helpers.models import half_plus_two_tf1

    export_scale(root / "scale" / "1", 2.0)
    export_scale(root / "scale" / "2", 3.0)
    export_dtypes(root / "dtypes" / "1")
    half_plus_two_tf1(root / "half_plus_two" / "123")
    return f"""model_config_list {{
  config {{
    name: "scale"
    base_path: "{root / "scale"}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "dtypes"
    base_path: "{root / "dtypes"}"
    model_platform: "tensorflow"
  }}
  config {{
    name: "half_plus_two"
    base_path: "{root / "half_plus_two"}"
    model_platform: "tensorflow"
  }}
}}
"""


if __name__ == "__main__":  # run in a subprocess: keeps TensorFlow out of the test process
    import sys

    target = Path(sys.argv[1])
    (target / "models.config").write_text(export_all(target))
