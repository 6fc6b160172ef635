"""ZenML steps: thin adapters that call ``drift`` and log to MLflow.

Steps that log to MLflow use the stack's experiment tracker named ``TRACKER`` (created by
``python -m mlops.stack``) and never cache: a cached tracked step would leave the pipeline
run without its MLflow run. Code that needs MLflow or ZenML but is not a step lives in ``mlops``.
"""

from mlops.stack import TRACKER

__all__ = ["TRACKER"]
