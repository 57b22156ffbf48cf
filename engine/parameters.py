"""One flat buffer per model with named views; gradients and optimizer moments share it."""
import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class ParameterLayout:
    """Names, shapes and offsets of a model's parameters in PyTorch's order and names:
    per layer k weight_ih_l{k} (G*H, I_k), weight_hh_l{k} (G*H, H), bias_ih_l{k} (G*H,),
    bias_hh_l{k} (G*H,); then head.weight (O, H) and head.bias (O,)."""

    def __init__(self, cell, input_size, hidden_size, output_size, num_layers):
        gate_rows = GATES[cell] * hidden_size
        shapes = []
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            shapes += [(f"weight_ih_l{k}", (gate_rows, layer_input)),
                       (f"weight_hh_l{k}", (gate_rows, hidden_size)),
                       (f"bias_ih_l{k}", (gate_rows,)),
                       (f"bias_hh_l{k}", (gate_rows,))]
        shapes += [("head.weight", (output_size, hidden_size)), ("head.bias", (output_size,))]
        self.shapes = dict(shapes)
        self.offsets = {}
        offset = 0
        for name, shape in shapes:
            self.offsets[name] = offset
            offset += int(np.prod(shape))
        self.size = offset
        self._slices = {name: (slice(self.offsets[name], self.offsets[name] + int(np.prod(shape))), shape)
                        for name, shape in self.shapes.items()}
        self.num_layers = num_layers

    def views(self, flat):
        """Named views into `flat` (size,), which must follow this layout."""
        if flat.shape != (self.size,):
            raise ValueError(f"flat buffer must have shape ({self.size},); got {flat.shape}")
        return {name: flat[part].reshape(shape) for name, (part, shape) in self._slices.items()}

    def layer_names(self, k):
        """The four parameter names of layer k, in kernel argument order."""
        return (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}")
