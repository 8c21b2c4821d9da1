"""Keras, imported once for the whole pipeline: `from pipeline.backend import keras`.

Importing it here rather than with a plain `import keras` does two things, both for start-up:
- TensorFlow's C++ banner (CPU features, oneDNN notes) is turned off, as it buries the
  training log.
- Keras is kept from importing optional packages it loads whenever they are installed, for
  features the pipeline never uses: scikit-learn (installed for MLflow) for Keras' scikit-learn
  wrappers, pandas for taking DataFrames as input, and pyplot for its image-gallery helpers
  (the pipeline draws with matplotlib's Figure API). They took 0.8 s of every start here. All
  stay importable afterwards for anyone else (MLflow imports pandas, for one).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported by Keras only if present (each in a try/except ImportError).
_NOT_FOR_KERAS = ("sklearn", "pandas", "matplotlib.pyplot")


def _import_keras():
    hidden = [name for name in _NOT_FOR_KERAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # makes `import name` raise ImportError
    try:
        import keras
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return keras


keras = _import_keras()
