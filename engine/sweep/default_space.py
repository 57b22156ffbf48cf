"""The search space of a sweep given none (docs/sweeps.md#the-default-space): the settings
that matter most for BPTT, the learning rate first, at ranges sized to the data.

    lr      1e-3..3e-2:log     the setting every measured sweep found the most important
    hidden  16,32,64
    layers  1,2
    dropout 0,0.1,0.3          between layers: searched unless the caller fixed one layer
                                (where it has nothing to act on)
    k1      LOW..HIGH:log       integers; HIGH the larger of a tenth of the shortest
                                series' training part and K1_REACH, at most half that part
                                and 200; LOW = min(10, HIGH // 2)

A setting the caller fixed is left out of it (the fixed value stands); k1 is left out
too when k2 or --full-bptt is given, as they bound it.
"""
K1_SHARE = 10       # k1 up to the shortest training part / K1_SHARE ...
# ... or up to K1_REACH, so that the range holds the k1 the defaults derive (whole seasonal
# periods nearest 50 steps: hourly 48, daily 49, weekly 52). Measured on the quality
# benchmark's daily40 panel (docs/performance.md#forecast-quality): with k1 at most 27 the
# sweep's one-step MASE was 1.10-1.17x the oracle's over seven runs (median 1.14), with k1
# at most 60 1.09-1.17x over ten (median 1.13, nine at most 1.15x).
K1_REACH = 60
K1_LARGEST = 200
K1_SMALLEST = 2
SPACE = {"lr": "1e-3..3e-2:log", "hidden": [16, 32, 64], "layers": [1, 2], "dropout": [0, 0.1, 0.3]}


def default_space(lengths, val_fraction, fixed):
    """{setting: SPEC} of the default space. lengths: rows of each series (one for a single
    series); val_fraction: the share of each held out for validation; fixed: the names of
    the settings the caller gave (or {name: value})."""
    shortest = int(min(lengths) * (1 - val_fraction))
    high = max(K1_SMALLEST + 1, min(K1_LARGEST, shortest // 2, max(shortest // K1_SHARE, K1_REACH)))
    low = max(K1_SMALLEST, min(10, high // 2))
    space = {name: spec for name, spec in SPACE.items() if name not in fixed}
    if isinstance(fixed, dict) and fixed.get("layers") == 1:
        space.pop("dropout", None)  # a single layer has no output below another
    if not {"k1", "k2", "full_bptt"} & set(fixed):
        space["k1"] = f"{low}..{high}:log"
    return space
