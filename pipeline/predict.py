"""`python -m pipeline.predict [--model URI] [--top k] [--show out.png] images...`: what a
trained model reads in your own pictures of digits.

Each PNG or JPEG is prepared as MNIST prepared its digits (`pipeline.data.images`) and
printed as `file: digit (probability)`. The model: `--model` (an MLflow URI such as
`runs:/<run id>/model` or `models:/mnist@champion`, or a `.keras` file); by default the
registered `mnist@champion` when there is one, else the DVC pipeline's `models/model.keras`.
`--request in.json` writes the prepared images as a request for `mlflow models serve` and
`mlflow models predict` (`{"inputs": [[784 pixels in [0, 1]], ...]}`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import plots
from pipeline.cli import fail
from pipeline.config import load_params
from pipeline.data.images import prepare
from pipeline.errors import PipelineError
from pipeline.paths import Paths
from pipeline.tracking.models import CHAMPION, alias_uri, load_model
from pipeline.tracking.store import DEFAULT_EXPERIMENT, tracking_uri

Predict = Callable[[np.ndarray], np.ndarray]


def _local(path: Path) -> tuple[Predict, list[str] | None]:
    """A `.keras` file, with the class names of the project's params.yaml if it has them."""
    from pipeline.models.serving import Classifier

    classifier = Classifier(path)
    params = Path("params.yaml")
    names = list(load_params(params).data.classes) if params.is_file() else None
    return classifier.predict, names


def choose_model(
    root: Path, uri: str, model: str | None, name: str
) -> tuple[str, Predict, list | None]:
    """The model to use, as `(what it is, predict, class names)`: `model`, else `name`'s
    champion in the tracking store at `uri`, else the model the pipeline trained at `root`.

    Raises:
        PipelineError: no model given and none registered or trained (one line).
    """
    if model is None:
        model = alias_uri(uri, name)
        if model is None:
            local = Paths.project(root).model
            if not local.is_file():
                raise PipelineError(
                    f"no model: none registered as {name}@{CHAMPION} in "
                    f"{uri} and no {local}; train one (`make run`) or "
                    "register one (`python -m pipeline.register --best`)"
                )
            model = str(local)
    if model.endswith(".keras") and "://" not in model:
        predict, names = _local(Path(model))
        return model, predict, names
    predict, metadata = load_model(uri, model)
    return model, predict, metadata.get("class_names")


def main(argv: list[str] | None = None) -> None:
    """Predict the digit in each image."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument("--model", help="MLflow model URI or .keras file (default: see above)")
    parser.add_argument(
        "--name",
        default=DEFAULT_EXPERIMENT,
        help="registered model whose champion is the default (%(default)s)",
    )
    parser.add_argument("--top", type=int, default=1, help="how many classes to print")
    parser.add_argument("--show", type=Path, help="save the images as the model saw them")
    parser.add_argument("--request", type=Path, help="save them as a serving request (JSON)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top {args.top}: give 1 or more")

    prepared, files, failed = [], [], 0
    for path in args.images:
        try:
            prepared.append(prepare(path))
            files.append(path)
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    if not prepared:
        sys.exit(1)
    images = np.stack(prepared)
    if args.request:
        rows = np.round(images.reshape(len(images), -1), 4).tolist()
        args.request.write_text(json.dumps({"inputs": rows}) + "\n")
    try:
        root = Path.cwd()
        used, predict, names = choose_model(root, tracking_uri(root), args.model, args.name)
    except PipelineError as err:
        fail(err)
    print(f"model: {used}")
    probs = np.asarray(predict(images.reshape(len(images), -1)))
    names = names or [str(i) for i in range(probs.shape[1])]
    captions = []
    for path, row in zip(files, probs, strict=True):
        best = np.argsort(-row)[: args.top]
        print(f"{path}: " + ", ".join(f"{names[i]} ({row[i]:.2f})" for i in best))
        captions.append(f"{names[best[0]]} ({row[best[0]]:.0%})")
    if args.show:
        plots.prediction_strip(images, captions, args.show)
        print(f"wrote {args.show}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
