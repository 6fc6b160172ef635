"""ZenML steps: thin adapters that call ``drift`` and log to MLflow.

Steps that log to MLflow use the stack's experiment tracker named ``TRACKER`` (created by
``python -m pipelines.stack``) and never cache: a cached tracked step would leave the pipeline
run without its MLflow run.
"""

TRACKER = "mlflow_tracker"
