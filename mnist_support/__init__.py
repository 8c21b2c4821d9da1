"""What the benchmarks and the tests share: the project copied into a fresh git repo, and a
directory served over HTTP on 127.0.0.1. Not part of the pipeline; imports nothing of it."""
