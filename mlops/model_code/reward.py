"""Models-from-code entry of a registered reward model, such as the preference head (see mlops.pyfunc_model)."""

from mlflow.models import set_model

from mlops.pyfunc_model import RewardModel

set_model(RewardModel())
