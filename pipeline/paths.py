"""Every file the pipeline reads or writes, in one place (dvc.yaml lists the same; a test checks).

Data lives under the project root, one directory per dataset (`data/raw/<name>/`,
`data/prepared/<name>/`), shared by every run. A run's own outputs (model, metrics, plots) go
under `out`: the project root for DVC stages, Hydra's job directory for
`python -m pipeline.train`, so sweep jobs never overwrite each other or DVC's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path
    out: Path
    dataset: str = "mnist"  # the config's data.name

    @classmethod
    def project(cls, root: Path | None = None, dataset: str = "mnist") -> Paths:
        """Paths of the DVC stages: everything relative to the project root (default: cwd)."""
        root = (root or Path.cwd()).resolve()
        return cls(root=root, out=root, dataset=dataset)

    def of(self, dataset: str) -> Paths:
        """The same paths for `dataset` (each stage takes its dataset from the config)."""
        return replace(self, dataset=dataset)

    # Shared data (download, preprocess), one directory per dataset.
    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw" / self.dataset

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared" / self.dataset

    @property
    def samples_plot(self) -> Path:
        return self.root / "reports" / "plots" / "samples.png"

    # One run's outputs (train, evaluate).
    @property
    def model(self) -> Path:
        return self.out / "models" / "model.keras"

    @property
    def run_info(self) -> Path:
        """The MLflow run that trained the model, for evaluate to log into."""
        return self.out / "models" / "run.json"

    @property
    def predictions(self) -> Path:
        """The final model's class probabilities, which evaluate reports on."""
        return self.out / "models" / "predictions.npz"

    @property
    def history(self) -> Path:
        return self.out / "reports" / "history.csv"

    @property
    def learning_curves(self) -> Path:
        return self.out / "reports" / "plots" / "learning_curves.png"

    @property
    def metrics(self) -> Path:
        return self.out / "reports" / "metrics.json"

    @property
    def per_class(self) -> Path:
        return self.out / "reports" / "per_class_accuracy.csv"

    @property
    def confusion(self) -> Path:
        return self.out / "reports" / "confusion.csv"

    @property
    def confusion_plot(self) -> Path:
        return self.out / "reports" / "plots" / "confusion_matrix.png"

    @property
    def misclassified_plot(self) -> Path:
        return self.out / "reports" / "plots" / "misclassified.png"
