"""Training: the trainer (all state), its checkpoints, data parallelism, and a whole run."""
