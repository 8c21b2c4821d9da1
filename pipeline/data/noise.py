"""Label noise: the memorisation experiment of Zhang et al. 2017 ("Understanding deep learning
requires rethinking generalization"), in which a network fits labels that are partly random.

`data.label_noise=0.2` gives a fifth of the fitted images a different class. Which images,
and which class each gets, depend on the run's seed alone: the same seed, the same labels,
in the train stage and again in the evaluate stage.
"""

from __future__ import annotations

import numpy as np


def relabel(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot `labels` with `round(fraction * N)` rows moved to another class.

    Each chosen row's class is shifted by 1 to C-1 places (uniformly), so it never stays
    what it was and every other class is equally likely.

    Returns:
        The noisy labels (a new array) and the indices of the rows changed, sorted.
    """
    labels = np.asarray(labels)
    n, classes = labels.shape
    rng = np.random.default_rng(seed)
    changed = np.sort(rng.permutation(n)[: int(round(fraction * n))])
    truth = labels[changed].argmax(axis=1)
    new = (truth + rng.integers(1, classes, size=len(changed))) % classes
    noisy = labels.copy()
    noisy[changed] = np.eye(classes, dtype=labels.dtype)[new]
    return noisy, changed
