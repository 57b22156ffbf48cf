"""The data of the sequence-classification benchmark (bench/classify.py): a UEA/UCR set
read from the .ts files that ship inside a pip-installed package's wheel (nothing is
downloaded), its official train/test split, a stratified validation split of the
training part, scaling by the training part's statistics, and packing into the engine's
(T, B, ...) arrays.

The set is JapaneseVowels (UCI; UEA multivariate archive, 2018): 9 male speakers saying
the vowels /ae/, 12 LPC cepstrum coefficients per frame, 7 to 29 frames per utterance;
270 training utterances (30 per speaker), 370 test utterances; the class is the speaker.
Its files are read from the `sktime` distribution (the bench extra) without importing
sktime: only the data files are used.

Variable lengths: every sequence is left-padded with zeros so that it ends at the last
step T - 1, and a reset marks its first real step. The reset zeroes the state entering
that step and stops the gradient there (docs/training.md, Resets), so each sequence is
run exactly as if alone, whatever the padding; and every sequence's last real step is the
batch's last step, where a last-step label goes. A reverse-direction pass starts at that
real last step and reaches the padding only after the sequence's own steps.
"""
import importlib.metadata
from pathlib import Path

import numpy as np

PACKAGE = "sktime"
DATA_FOLDER = "sktime/datasets/data"
DATASET = "JapaneseVowels"
LABELS = ("last", "every")


class Split:
    """Sequences (n,) of (L_i, C) float64 arrays and their classes (n,) int64, 0..K-1."""

    def __init__(self, sequences, classes):
        self.sequences = list(sequences)
        self.classes = np.asarray(classes, dtype=np.int64)

    def __len__(self):
        return len(self.sequences)

    def subset(self, rows):
        return Split([self.sequences[row] for row in rows], self.classes[rows])


def data_directory(dataset=DATASET):
    """The folder of `dataset`'s .ts files inside the installed package (ImportError naming
    the extra when the package is absent)."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"the classification benchmark reads {dataset} from the {PACKAGE} package: "
                          "pip install -e '.[bench]'") from None
    folder = Path(distribution.locate_file(f"{DATA_FOLDER}/{dataset}"))
    if not folder.is_dir():
        raise ImportError(f"{PACKAGE} {distribution.version} does not ship {dataset} ({folder} is missing)")
    return folder


def package_version():
    return importlib.metadata.version(PACKAGE)


def load(dataset=DATASET):
    """(train, test, class_names): the official split of `dataset`, classes numbered in the
    order the file's @classLabel header lists them."""
    folder = data_directory(dataset)
    train_sequences, train_labels, names = read_ts(folder / f"{dataset}_TRAIN.ts")
    test_sequences, test_labels, test_names = read_ts(folder / f"{dataset}_TEST.ts")
    if test_names != names:
        raise ValueError(f"{dataset}: the train and test files list different classes")
    number = {name: k for k, name in enumerate(names)}
    return (Split(train_sequences, [number[label] for label in train_labels]),
            Split(test_sequences, [number[label] for label in test_labels]), names)


def read_ts(path):
    """(sequences, labels, class_names) of a classification .ts file (sktime's format:
    '#' comments, '@' headers, then one case a line: dimensions separated by ':', values
    by ',', the class label last). Each sequence is an (L, C) float64 array."""
    header, sequences, labels = {}, [], []
    with open(path) as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "data" not in header:
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.split()
                continue
            *dimensions, label = line.split(":")
            sequences.append(_case(dimensions, header, f"{path}:{number}"))
            labels.append(label.strip())
    names = header.get("classlabel", ["false"])
    if names[0] != "true":
        raise ValueError(f"{path}: not a classification file (no '@classLabel true ...' header)")
    unknown = sorted(set(labels) - set(names[1:]))
    if unknown:
        raise ValueError(f"{path}: labels {unknown} are not in the @classLabel header")
    return sequences, labels, tuple(names[1:])


def _case(dimensions, header, where):
    """One case's (L, C) array from its C comma-separated dimensions, all of one length."""
    expected = int(header["dimensions"][0]) if "dimensions" in header else len(dimensions)
    if len(dimensions) != expected:
        raise ValueError(f"{where}: {len(dimensions)} dimensions, the header says {expected}")
    if any("?" in dimension for dimension in dimensions):
        raise ValueError(f"{where}: missing values are not supported")
    columns = [np.array(dimension.split(","), dtype=np.float64) for dimension in dimensions]
    if len({len(column) for column in columns}) != 1:
        raise ValueError(f"{where}: the dimensions have different lengths")
    return np.stack(columns, axis=1)


def validation_rows(classes, share, seed):
    """(fit_rows, validation_rows): `share` of each class's rows (rounded, at least one when
    share > 0) drawn at random by `seed`; both sorted."""
    rng = np.random.default_rng(seed)
    held = []
    for k in np.unique(classes):
        rows = np.flatnonzero(classes == k)
        count = max(1, round(share * len(rows))) if share > 0 else 0
        held.extend(rng.permutation(rows)[:count])
    held = np.sort(np.array(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(classes)), held), held


class Scaler:
    """Per-channel z-score with the mean and sd of every step of the fitting sequences."""

    def __init__(self, sequences):
        steps = np.concatenate(sequences)  # (sum L_i, C)
        self.mean = steps.mean(axis=0)
        self.sd = steps.std(axis=0)
        self.sd[self.sd == 0] = 1.0

    def __call__(self, split):
        return Split([(sequence - self.mean) / self.sd for sequence in split.sequences], split.classes)


def pack(split, label="last", dtype=np.float32):
    """The engine's arrays for a split, each sequence left-padded to end at step T - 1
    (T: the longest sequence):
    x (T, B, C) inputs, zeros before a sequence starts; resets (T, B) True at each
    sequence's first step; y (T, B) int64 targets, the class at the last step (label
    "last") or at every step of the sequence ("every"), -1 elsewhere; steps (T, B) True
    at each sequence's own steps."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}; got {label!r}")
    lengths = np.array([len(sequence) for sequence in split.sequences])
    T, B, C = lengths.max(), len(split), split.sequences[0].shape[1]
    x = np.zeros((T, B, C), dtype=dtype)
    steps = np.zeros((T, B), dtype=bool)
    for b, sequence in enumerate(split.sequences):
        x[T - len(sequence):, b] = sequence
        steps[T - len(sequence):, b] = True
    resets = np.zeros((T, B), dtype=bool)
    resets[T - lengths, np.arange(B)] = True
    y = np.full((T, B), -1, dtype=np.int64)
    if label == "last":
        y[-1] = split.classes
    else:
        y[steps] = np.broadcast_to(split.classes, (T, B))[steps]
    return x, y, resets, steps
