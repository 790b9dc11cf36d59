"""Models the tests build themselves with TensorFlow (TF Serving's own test models are never committed).

`half_plus_two_tf1` rebuilds upstream's half_plus_two the TF1 way (placeholders, variables,
a session, predict/classify/regress signatures over tf.Example); `keras_classifier` is a
Keras 3 export. Both write a complete SavedModel into the folder given.
"""

from __future__ import annotations

from pathlib import Path


def half_plus_two_tf1(
    version_dir: Path, *, a: float = 0.5, b: float = 2.0, fail: bool = False, slow_iters: int = 0
) -> Path:
    """y = a*x + b as a TF1 graph, with the signature keys TF Serving's example uses.

    `fail`: every real input makes the graph raise ("assertion failed: [canary_bad]");
    `slow_iters`: that many 256×256 matmuls run before answering (a slow version).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        var_a = v1.Variable(a, name="a")
        var_b = v1.Variable(b, name="b")
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.add(tf.multiply(var_a, x), var_b)
        if fail:
            check = v1.debugging.Assert(tf.reduce_all(x < -1e30), ["canary_bad"])
            with tf.control_dependencies([check]):
                y = tf.identity(y)
        if slow_iters:
            m = tf.ones([256, 256]) / 256.0
            _, burn = tf.while_loop(
                lambda i, acc: i < slow_iters, lambda i, acc: (i + 1, tf.matmul(acc, m)), [0, m]
            )
            y = y + 0.0 * tf.reduce_sum(burn)
        y = tf.identity(y, name="y")
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        y_from_example = tf.add(tf.multiply(var_a, parsed["x"]), var_b, name="y_from_example")
        sess.run(v1.global_variables_initializer())

        info = v1.saved_model.utils.build_tensor_info
        predict = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": info(x)}, outputs={"y": info(y)}, method_name="tensorflow/serving/predict"
        )
        classify = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(serialized)},
            outputs={"scores": info(y_from_example)},
            method_name="tensorflow/serving/classify",
        )
        regress = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(serialized)},
            outputs={"outputs": info(y_from_example)},
            method_name="tensorflow/serving/regress",
        )
        builder = v1.saved_model.builder.SavedModelBuilder(str(version_dir))
        builder.add_meta_graph_and_variables(
            sess,
            ["serve"],
            signature_def_map={
                "serving_default": predict,
                "classify_x_to_y": classify,
                "regress_x_to_y": regress,
                "tensorflow/serving/regress": regress,
            },
            strip_default_attrs=True,
        )
        builder.save()
    return version_dir


def matmul_iters_for(seconds: float, *, floor: int = 150) -> int:
    """How many of `half_plus_two_tf1(slow_iters=...)`'s 256×256 matmuls take `seconds` on this
    machine, measured now with the same TF1 graph in a session (never fewer than `floor`).

    A slow version built with it is slow by construction wherever the suite runs, so a latency
    threshold far below `seconds` fails it on a fast machine and a loaded one alike."""
    import time

    import tensorflow as tf

    v1 = tf.compat.v1
    probe = 50
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        m = tf.ones([256, 256]) / 256.0
        _, burn = tf.while_loop(lambda i, acc: i < probe,
                                lambda i, acc: (i + 1, tf.matmul(acc, m)), [0, m])
        total = tf.reduce_sum(burn)
        sess.run(total)  # warm up
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            sess.run(total)
            best = min(best, time.perf_counter() - started)
    per_iter = max(best / probe, 1e-7)
    return max(floor, int(seconds / per_iter) + 1)


def keras_classifier(
    version_dir: Path | None = None, *, seed: int = 0, features: int = 4, classes: int = 3
):
    """A small Keras 3 softmax classifier; exported to `version_dir` when given. Returns the model."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(features,), name="features"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    if version_dir is not None:
        model.export(str(version_dir), format="tf_saved_model", verbose=False)
    return model


def half_plus_two_unloadable(version_dir: Path) -> Path:
    """A half_plus_two whose saved_model.pb and variables index are valid but whose variable data
    is zeroed: every check that reads files without loading passes (it inspects as servable), and
    TensorFlow's loader fails when it restores the variables. The way to reach what happens
    *after* a reload is sent, where a version that fails to load must not take the old one down."""
    half_plus_two_tf1(version_dir)
    shards = list((version_dir / "variables").glob("variables.data-*"))
    assert shards, f"no variable shard under {version_dir}"
    for shard in shards:
        shard.write_bytes(b"\0" * shard.stat().st_size)
    return version_dir
