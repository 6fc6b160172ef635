"""Evaluation: the protocol that measures a model, trajectory matching, and the promotion gate."""
