"""DRIFT library."""
