"""Fuzzing: targets over everything that reads network bytes, the acceptor over a socket,
the long atheris run (run.py) and the seed capture (capture_seeds.py)."""
