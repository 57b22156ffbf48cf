"""Static per-series values of a panel (--static): one value per series and column, read
from columns that hold a single value within each series, z-scored across the series
(a per-series z-score would turn each into 0)."""
import numpy as np

from engine.data import Normalizer, select_columns
from engine.series import DataError


def read(panel, names):
    """(N, S) the static columns `names` of each series of `panel`: constant within a series
    (missing cells ignored), observed at least once."""
    rows = []
    for series_id, one in zip(panel.ids, panel.series):
        values = select_columns(one, names, "static").values
        row = []
        for column, name in enumerate(names):
            observed = values[~np.isnan(values[:, column]), column]
            if not len(observed):
                raise DataError(f'static: series "{series_id}" has no value of "{name}"')
            if (observed != observed[0]).any():
                raise DataError(f'static: "{name}" changes within series "{series_id}" ({observed[0]:g}, then '
                                f"{observed[observed != observed[0]][0]:g}); a static column holds one value "
                                "per series (use --known or --inputs for values that change)")
            row.append(observed[0])
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(panel.ids), len(names))


def scaled(panel, names, record=None):
    """(read(panel, names) z-scored, the scaling record): fitted across the series, or the
    stored `record` ({"mean", "std"}) of a trained model. None, None without static columns."""
    if not names:
        return None, None
    values = read(panel, names)
    norm = Normalizer.from_dict(record) if record is not None else Normalizer.fit(values)
    return norm.transform(values), norm.to_dict()
