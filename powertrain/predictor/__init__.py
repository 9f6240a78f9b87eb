"""PowerTrain predictors: time and power networks, transfer, baselines, Pareto and optimizer."""

from powertrain.predictor.model import TRANSFER_METHODS, PowerTrainPredictor, Prediction
from powertrain.predictor.state import PredictorState

__all__ = ["TRANSFER_METHODS", "PowerTrainPredictor", "Prediction", "PredictorState"]
