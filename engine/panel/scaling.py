"""Scaling a panel: a z-score per series (the default with more than one series), or one
for the whole panel, fitted on the training parts only and stored per id as JSON in the
checkpoint's data recipe (docs/data.md)."""
from dataclasses import dataclass

import numpy as np

from engine.data import Normalizer
from engine.series import DataError

SCALES = ("series", "global")
GLOBAL = "*"   # the key of the one shared normaliser under scale="global"


@dataclass(frozen=True, eq=False)
class PanelScaler:
    """scale: "series" or "global"; inputs / targets: id -> Normalizer (the one key "*"
    under "global")."""
    scale: str
    inputs: dict
    targets: dict

    @classmethod
    def fit(cls, scale, ids, train_inputs, train_targets):
        """Fit on the training parts: N arrays (T_i, I) and (T_i, O), NaN ignored.
        scale None: "series" for more than one series, else "global"."""
        scale = choose_scale(scale, len(ids))
        if scale == "global":
            return cls(scale, {GLOBAL: _fit("inputs", np.concatenate(train_inputs))},
                       {GLOBAL: _fit("targets", np.concatenate(train_targets))})
        inputs, targets = {}, {}
        for series_id, x, y in zip(ids, train_inputs, train_targets):
            inputs[series_id] = _fit(f'inputs of series "{series_id}"', x)
            targets[series_id] = _fit(f'targets of series "{series_id}"', y)
        return cls(scale, inputs, targets)

    def for_series(self, series_id):
        """(input Normalizer, target Normalizer) of one series."""
        key = GLOBAL if self.scale == "global" else series_id
        if key not in self.inputs:
            raise DataError(f'series "{series_id}" was not in the training data, so it has no '
                            "per-series scaling; train with it, or with --scale global")
        return self.inputs[key], self.targets[key]

    def to_dict(self):
        """{"scale", "inputs": {id: {"mean", "std"}}, "targets": {...}}, JSON-ready."""
        return {"scale": self.scale,
                "inputs": {key: norm.to_dict() for key, norm in self.inputs.items()},
                "targets": {key: norm.to_dict() for key, norm in self.targets.items()}}

    @classmethod
    def from_dict(cls, record):
        try:
            return cls(record["scale"],
                       {key: Normalizer.from_dict(norm) for key, norm in record["inputs"].items()},
                       {key: Normalizer.from_dict(norm) for key, norm in record["targets"].items()})
        except (KeyError, TypeError, AttributeError) as error:
            raise DataError(f"panel scaling record is malformed ({error!r})") from None


def choose_scale(scale, count):
    if scale is None:
        return "series" if count > 1 else "global"
    if scale not in SCALES:
        raise DataError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    return scale


def _fit(what, values):
    try:
        return Normalizer.fit(values)
    except DataError as error:
        raise DataError(f"{what}: {error}") from None
