"""Models-from-code entry of the registered preference reward head (see mlops.pyfunc_model)."""

from mlflow.models import set_model

from mlops.pyfunc_model import PreferenceHeadModel

set_model(PreferenceHeadModel())
