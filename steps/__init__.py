"""ZenML steps: thin adapters that call ``drift`` and log to MLflow.

Steps that log to MLflow use the active stack's experiment tracker (``experiment_tracker=True``)
and never cache: a cached tracked step would leave the pipeline run without its MLflow run.
Artifacts pass between steps through the artifact store only. Code that needs MLflow or ZenML but
is not a step lives in ``mlops``.
"""

from mlops.quiet import quiet_pipeline_output

quiet_pipeline_output()
