"""One flat buffer per model with named views; gradients and optimizer moments share it."""
import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
DIRECTION_SUFFIXES = ("", "_reverse")  # PyTorch's names: weight_ih_l0, weight_ih_l0_reverse


class ParameterLayout:
    """Names, shapes and offsets of a model's parameters in PyTorch's order and names:
    per layer k weight_ih_l{k} (G*H, I_k), weight_hh_l{k} (G*H, H), bias_ih_l{k} (G*H,),
    bias_hh_l{k} (G*H,), then, when bidirectional, the same four with the suffix
    "_reverse"; then head.weight (O, D*H) and head.bias (O,); then, with skip, skip.weight
    (O, I), the linear path from the inputs to the outputs (no bias: the head's serves).
    D = 2 directions when bidirectional (else 1); I_k is input_size for k = 0 and D*H
    above it (the directions' outputs concatenated)."""

    def __init__(self, cell, input_size, hidden_size, output_size, num_layers, bidirectional=False, skip=False):
        gate_rows = GATES[cell] * hidden_size
        self.directions = 2 if bidirectional else 1
        shapes = []
        for k in range(num_layers):
            layer_input = input_size if k == 0 else self.directions * hidden_size
            for suffix in DIRECTION_SUFFIXES[:self.directions]:
                shapes += [(f"weight_ih_l{k}{suffix}", (gate_rows, layer_input)),
                           (f"weight_hh_l{k}{suffix}", (gate_rows, hidden_size)),
                           (f"bias_ih_l{k}{suffix}", (gate_rows,)),
                           (f"bias_hh_l{k}{suffix}", (gate_rows,))]
        shapes += [("head.weight", (output_size, self.directions * hidden_size)), ("head.bias", (output_size,))]
        if skip:
            shapes.append(("skip.weight", (output_size, input_size)))
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

    def layer_names(self, k, reverse=False):
        """The four parameter names of layer k (its reverse direction's with reverse=True),
        in kernel argument order."""
        suffix = DIRECTION_SUFFIXES[1] if reverse else ""
        return (f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}", f"bias_ih_l{k}{suffix}", f"bias_hh_l{k}{suffix}")

    def direction_names(self):
        """layer_names of every layer and direction, in the buffer's order (l0, l0_reverse, l1, ...)."""
        return [self.layer_names(k, reverse) for k in range(self.num_layers)
                for reverse in (False, True)[:self.directions]]
