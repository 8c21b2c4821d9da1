"""Every activation in every model, on real MNIST: trains, saves, reloads in a fresh process
with Keras' safe_mode, and predicts exactly as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from pipeline.config import MODELS, Activation, compose, validate
from pipeline.data.prepared import load_prepared, read_aligned

# Thirty trainings: the everyday check that each activation builds is tests/test_models.py.
pytestmark = pytest.mark.slow

# Small versions of each model keep 30 trainings quick; the layers are the shipped ones.
SIZES = {
    "mlp": ["model.hidden_units=[64]"],
    "cnn": ["model.filters=[8,16]", "model.dense_units=32"],
}
ACTIVATIONS = [a.name for a in Activation]  # swish is silu's alias, not listed again
COMBOS = [(m, a) for m in MODELS for a in ACTIVATIONS]
# On 2,000 images: enough steps for the slowest learners (hard_sigmoid, sigmoid) to show.
EPOCHS, BATCH = 2, 32

RELOAD = """
import sys
import keras
import numpy as np
import pipeline.models.layers  # registers the project's layers, as evaluate does

x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    model = keras.saving.load_model(path, safe_mode=True)
    np.save(path.replace(".keras", ".reloaded.npy"), model(x, training=False).numpy())
"""


@pytest.fixture(scope="module")
def trained(make_project, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import keras

    from pipeline.fit import build_from_config

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    x, y = read_aligned(*load_prepared(paths, "train"))
    x_test, y_test = read_aligned(*load_prepared(paths, "test"))
    out = tmp_path_factory.mktemp("models")
    np.save(out / "x_test.npy", x_test)
    accuracy = {}
    for model_name, activation in COMBOS:
        overrides = [f"model={model_name}", *SIZES[model_name], f"activation={activation}"]
        cfg = validate(compose([*overrides, f"epochs={EPOCHS}", f"batch_size={BATCH}"]))
        keras.utils.set_random_seed(0)
        model = build_from_config(cfg, (28, 28), 10, total_steps=EPOCHS * len(x) // BATCH)
        model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
        model.save(out / f"{model_name}-{activation}.keras")
        # Called eagerly on the whole set, here and after reloading: compiling a prediction
        # function for each of the 30 models would cost more than their predictions.
        probs = model(np.asarray(x_test), training=False).numpy()
        np.save(out / f"{model_name}-{activation}.npy", probs)
        accuracy[model_name, activation] = float((probs.argmax(1) == y_test.argmax(1)).mean())
        keras.backend.clear_session()
    files = sorted(str(p) for p in out.glob("*.keras"))
    subprocess.run(
        [sys.executable, "-c", RELOAD, str(out / "x_test.npy"), *files],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    return out, accuracy


@pytest.mark.parametrize(("model", "activation"), COMBOS)
def test_trains_saves_and_reloads_identically(trained, model: str, activation: str) -> None:
    out, accuracy = trained
    assert accuracy[model, activation] > 0.5, sorted(accuracy.items(), key=lambda kv: kv[1])[:6]
    before = np.load(out / f"{model}-{activation}.npy")
    after = np.load(out / f"{model}-{activation}.reloaded.npy")
    np.testing.assert_array_equal(after, before)
