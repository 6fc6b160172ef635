"""Models-from-code entry of the registered image generator (see mlops.pyfunc_model)."""

from mlflow.models import set_model

from mlops.pyfunc_model import DriftImageGenerator

set_model(DriftImageGenerator())
