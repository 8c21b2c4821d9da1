"""The data: reading the published files (`idx`), the download and preprocess stages, and
the prepared arrays that training and evaluation read (`prepared`).

Nothing here imports TensorFlow or Keras: the data stages start fast, and the arrays reach
TensorFlow only in the model code (`pipeline.models.scoring.as_tensors`).
"""
