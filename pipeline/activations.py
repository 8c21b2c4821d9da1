"""Every hidden-layer activation the pipeline offers, in one table.

Adding an activation is one entry in `TABLE`. Everything else reads it: the config schema
(the names `activation=` accepts, and each argument of `activation_args` with its default and
valid range), the model builders (`pipeline.models.layers`), run names, the parameters a run
logs, and the list in docs/configuration.md (a test compares it with `markdown()`).

Imports neither Keras nor anything of the project, so the config can be checked (and DVC can
compose it) without loading TensorFlow.

    python -m pipeline.activations      # the list docs/configuration.md shows
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arg:
    """One argument of an activation, as `activation_args.<name>` in the config."""

    name: str
    default: float | int
    minimum: float | int  # the smallest valid value (inclusive)
    doc: str

    @property
    def kind(self) -> type:
        return type(self.default)


@dataclass(frozen=True)
class Activation:
    """How an activation is built.

    Without `layer`, it is Keras' activation function of that name, passed to the hidden
    layer as `activation=` (which keeps the seed's network exactly the seed's). With `layer`,
    it is a layer of its own: a class of `keras.layers` (or the project's `Maxout`), built
    with its `args`, and with `spatial` too after a convolution.
    """

    name: str
    doc: str
    layer: str | None = None
    args: tuple[Arg, ...] = ()
    # Extra layer arguments after a convolution (prelu: one slope per channel, not per pixel).
    spatial: Mapping[str, Any] = field(default_factory=dict)
    # An argument that multiplies the width of the linear layer before it (maxout's pieces).
    widen_by: str | None = None
    aliases: tuple[str, ...] = ()


TABLE: tuple[Activation, ...] = (
    Activation("relu", "max(x, 0): the seed's"),
    Activation(
        "leaky_relu",
        "a small slope for x < 0",
        layer="LeakyReLU",
        args=(Arg("negative_slope", 0.2, 0.0, "slope for x < 0"),),
    ),
    Activation(
        "elu",
        "exponential for x < 0, saturating at -alpha",
        layer="ELU",
        args=(Arg("alpha", 1.0, 0.0, "saturation value for x < 0"),),
    ),
    Activation("selu", "scaled elu, self-normalizing"),
    Activation("gelu", "x times the normal CDF of x"),
    Activation("silu", "x * sigmoid(x)", aliases=("swish",)),
    Activation("tanh", "hyperbolic tangent"),
    Activation("sigmoid", "logistic function"),
    Activation("softplus", "log(1 + exp(x))"),
    Activation("softsign", "x / (1 + |x|)"),
    Activation("mish", "x * tanh(softplus(x))"),
    Activation("relu6", "relu capped at 6"),
    Activation("hard_sigmoid", "piecewise-linear sigmoid"),
    Activation(
        "prelu",
        "a learned slope for x < 0, per unit or channel (He et al., 2015)",
        layer="PReLU",
        spatial={"shared_axes": [1, 2]},
    ),
    Activation(
        "maxout",
        "the max of k linear pieces per unit (Goodfellow et al., 2013)",
        layer="Maxout",
        widen_by="pieces",
        args=(Arg("pieces", 2, 2, "linear pieces per unit, the max of which is taken"),),
    ),
)

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in TABLE}
# Other names for the same activation; a run records the table's own name.
ALIASES: dict[str, str] = {alias: a.name for a in TABLE for alias in a.aliases}


def _arguments() -> dict[str, Arg]:
    """Every argument by name. Two activations may share one only with the same meaning."""
    args: dict[str, Arg] = {}
    for activation in TABLE:
        for arg in activation.args:
            if args.setdefault(arg.name, arg) != arg:
                raise ValueError(f"activation argument {arg.name!r} is declared twice, unlike")
    return args


ARGUMENTS: dict[str, Arg] = _arguments()


def own_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of `activation_args` that activation `name` reads (none for most)."""
    return {a.name: args[a.name] for a in ACTIVATIONS[name].args}


def describe(name: str, args: Mapping[str, Any]) -> str:
    """The activation as a run name shows it: `elu`, or `elu(alpha=0.5)` off its defaults."""
    own = ACTIVATIONS[name].args
    changed = [f"{a.name}={args[a.name]}" for a in own if args[a.name] != a.default]
    return f"{name}({','.join(changed)})" if changed else name


def markdown() -> str:
    """The list of activations docs/configuration.md shows, one line."""
    items = []
    for a in TABLE:
        extra = [f"alias {', '.join(a.aliases)}"] if a.aliases else []
        extra += [f"`activation_args.{arg.name}={arg.default}`: {arg.doc}" for arg in a.args]
        items.append(f"{a.name} ({'; '.join([a.doc, *extra])})")
    return ", ".join(items)


if __name__ == "__main__":
    print(markdown())
