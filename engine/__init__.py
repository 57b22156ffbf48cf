"""bptt engine: recurrent models trained with (truncated) backpropagation through time."""
from engine.bptt import loss_and_grad
from engine.model import Model

__all__ = ["Model", "loss_and_grad"]
