"""The soak campaign (`make soak`): see run.py."""
