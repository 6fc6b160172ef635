"""Data: prompt sets, preference pairs, their validation, and their provenance."""
