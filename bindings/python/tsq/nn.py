"""Layers, sequential networks, training and network-level TSQ
(include/tsq/nn.h), and model files (include/tsq/model.h): the names of
layers.py, net.py, training.py and conversion.py, gathered."""

# flake8: noqa: F401
from .conversion import TsqProgress
from .layers import (ActQuant, BatchNorm, Conv2d, Dense, Flatten, GlobalAvgPool, Layer,
                     LowbitConv2d, LowbitDense, MaxPool2d, Param, ReLU, layer_kind_name)
from .net import Net
from .training import EvalResult, StepResult, softmax_cross_entropy

__all__ = ["Layer", "Dense", "Conv2d", "BatchNorm", "ReLU", "MaxPool2d", "GlobalAvgPool",
           "Flatten", "ActQuant", "LowbitDense", "LowbitConv2d", "Net", "Param",
           "StepResult", "EvalResult", "TsqProgress", "softmax_cross_entropy",
           "layer_kind_name"]
