"""What happened during training: one record per update and one per epoch."""
import numpy as np

UPDATE_FIELDS = ("step", "loss", "grad_norm", "clipped", "lr")


class History:
    """updates: list of {"step", "loss", "grad_norm" (before clipping), "clipped", "lr"
    [, "dh_norms" (L, window) with diagnostics]}. epochs: list of {"epoch", "loss",
    "updates", "seconds" [, "val_loss"]}."""

    def __init__(self):
        self.updates = []
        self.epochs = []

    def append_update(self, record, keep=None):
        """Add an update record, keeping only the latest `keep` (None: all, 0: none)."""
        self.updates.append(record)
        if keep is not None and len(self.updates) > keep:
            del self.updates[:len(self.updates) - keep]  # a pointer move of at most `keep` entries

    def column(self, field):
        """One field of every update as an array, e.g. history.column("grad_norm")."""
        missing = [index for index, record in enumerate(self.updates) if field not in record]
        if missing:
            raise KeyError(f"update field {field!r} is missing from {len(missing)} of {len(self.updates)} "
                           f"updates (first: update {missing[0] + 1}); fields are {list(UPDATE_FIELDS)}, plus "
                           "'dh_norms' with diagnostics on (checkpoints do not keep dh_norms)")
        values = [record[field] for record in self.updates]
        if len({np.shape(value) for value in values}) > 1:
            raise ValueError(f"update field {field!r} changes shape from update to update (windows of "
                             f"different lengths); read it per update: history.updates[i][{field!r}]")
        return np.array(values)

    def to_arrays(self):
        """The per-update fields as arrays (checkpoints store these; dh_norms are not kept)."""
        return {field: self.column(field) for field in UPDATE_FIELDS}

    @classmethod
    def from_arrays(cls, arrays, epochs):
        history = cls()
        columns = [arrays[field].tolist() for field in UPDATE_FIELDS]
        history.updates = [dict(zip(UPDATE_FIELDS, values)) for values in zip(*columns)]
        history.epochs = list(epochs)
        return history

    def __repr__(self):
        return f"History({len(self.updates)} updates, {len(self.epochs)} epochs)"
