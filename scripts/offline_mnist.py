"""Offline stand-ins for TF Serving's example mnist_client.py (used by scripts/upstream_suite.sh).

    python scripts/offline_mnist.py DATA_DIR MODEL_BASE_PATH

Writes MNIST-format files (gzip'd idx, the names mnist_input_data.py looks for, so it downloads
nothing) of synthetic digits, and a TF1 SavedModel with mnist_saved_model.py's signature
(predict_images: images [?, 784] float -> scores [?, 10]) as version 1. Digit k lights pixel rows
2k and 2k+1; the model scores each label by the brightness of its rows, so a server that answers
correctly gets a 0% error rate.
"""

import gzip
import os
import struct
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

work, export = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)

def images_for(labels):
    imgs = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        imgs[i, 2 * k: 2 * k + 2, :] = 255
    return imgs

def write_idx(path, arr, magic):
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape))
        fh.write(arr.tobytes())

os.makedirs(work, exist_ok=True)
for prefix, n in (("train", 5010), ("t10k", 200)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_idx(f"{work}/{prefix}-images-idx3-ubyte.gz", images_for(labels), 2051)
    write_idx(f"{work}/{prefix}-labels-idx1-ubyte.gz", labels, 2049)

w = np.zeros((784, 10), np.float32)
for k in range(10):
    w[2 * k * 28:(2 * k + 2) * 28, k] = 1.0 / 56
v1 = tf.compat.v1
g = tf.Graph()
with g.as_default(), v1.Session(graph=g) as sess:
    x = v1.placeholder(tf.float32, [None, 784], name="x")
    y = tf.nn.softmax(tf.matmul(x, tf.constant(w)) * 20.0, name="y")
    info = v1.saved_model.utils.build_tensor_info
    sig = v1.saved_model.signature_def_utils.build_signature_def(
        {"images": info(x)}, {"scores": info(y)}, "tensorflow/serving/predict")
    b = v1.saved_model.Builder(f"{export}/1")
    b.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"predict_images": sig, "serving_default": sig})
    b.save()
print(f"wrote {work} and {export}/1")
