"""`python -m pipeline.tracking log <job dir> ...`: log finished jobs into MLflow."""

from pipeline.tracking.offline import main

main()
