"""Models and optimizers, built by name from explicit arguments.

A model is a module here with a `build(image_shape, num_classes, activation, activation_args,
**options)` function, its entry in `build.BUILDERS`, a schema in `pipeline.config.MODELS` and a YAML
file in `conf/model/` (a test checks that the three agree). Every builder takes the prepared
flat pixels, so preprocessing stays the seed's whatever the architecture, and puts the chosen
activation after each hidden layer (`layers.hidden`).
`scoring` loads, and scores, a trained model; `training` holds the Keras callbacks a
training runs besides its scoring. Nothing here knows of the config file,
MLflow, DVC or the project's paths.
"""
