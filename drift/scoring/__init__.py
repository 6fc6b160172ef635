"""Scoring images: rewards (alignment), embeddings and the diversity and coverage metrics on them,
and the learned preference head."""
