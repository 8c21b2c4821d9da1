"""The seed: the classic Keras MNIST script this project grew out of, kept as the reference
that benchmarks/bench.py measures the pipeline against.

It is the original loop, unchanged: Dense 512 relu, softmax, rmsprop, categorical
cross-entropy, 5 epochs, batch 128. Two things differ from the original, neither inside the
training loop: the arrays come from the four IDX files in a directory (Keras' `load_data`
would download mnist.npz, and these machines have no internet), and the script prints how
long `fit` took and the test accuracy as one JSON line for the benchmark to read.

    python benchmarks/seed.py data/raw/mnist
"""

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
from keras import layers, models
from keras.utils import to_categorical


def load_data(directory):
    """(train_images, train_labels), (test_images, test_labels), as Keras' load_data."""

    def idx(name):
        data = gzip.decompress((Path(directory) / name).read_bytes())
        dims = data[3]  # IDX header: 0, 0, type, number of dimensions, then the sizes
        shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

    return (
        (idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")),
        (idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")),
    )


parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("raw", help="directory holding the four MNIST IDX .gz files")
parser.add_argument("--train-samples", type=int, default=60000, help="for a quick check")
parser.add_argument("--test-samples", type=int, default=10000, help="for a quick check")
parser.add_argument("--epochs", type=int, default=5, help="for a quick check")
args = parser.parse_args()

(train_images, train_labels), (test_images, test_labels) = load_data(args.raw)
train_images, train_labels = train_images[: args.train_samples], train_labels[: args.train_samples]
test_images, test_labels = test_images[: args.test_samples], test_labels[: args.test_samples]

network = models.Sequential()
network.add(layers.Input(shape=(28 * 28,)))
network.add(layers.Dense(512, activation="relu"))
network.add(layers.Dense(10, activation="softmax"))
network.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])

train_images = train_images.reshape((len(train_images), 28 * 28)).astype("float32") / 255
test_images = test_images.reshape((len(test_images), 28 * 28)).astype("float32") / 255
train_labels = to_categorical(train_labels)
test_labels = to_categorical(test_labels)

start = time.perf_counter()
network.fit(train_images, train_labels, epochs=args.epochs, batch_size=128)
fit_seconds = time.perf_counter() - start
test_loss, test_acc = network.evaluate(test_images, test_labels)
print("test_acc:", test_acc)
print(json.dumps({"fit_seconds": fit_seconds, "test_accuracy": float(test_acc)}))
