"""Bad time stamps, ids and --from values, and options that used to be silently ignored
(issue 28, classes 3, 4, 6, 15 and 19): each is one "Error:" line on stderr, exit status
2, no traceback, and nothing in the working directory created or changed."""

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from cli_checks import assert_bad_input, snapshot
from test_bad_inputs import TINY

SMALL = [*TINY, "--streams", "2"]


def write_csv(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Series with plain and zoned stamps, a long panel with look-alike ids, directories of
    series files, and checkpoints trained on them."""
    root = tmp_path_factory.mktemp("originals_time")
    hours = np.datetime64("2024-01-01T00:00") + np.arange(400).astype("timedelta64[h]")
    wave = np.round(np.sin(np.arange(400) / 5), 6)
    write_csv(root / "plain.csv", "time,v", zip(hours, wave))
    write_csv(root / "zoned.csv", "time,v", ((f"{hour}+05:00", value) for hour, value in zip(hours, wave)))
    write_csv(root / "mixed.csv", "time,v", [(f"{hour}+05:00", value) for hour, value in zip(hours[:30], wave)]
              + [(hours[30], 0.5)])
    write_csv(root / "long.csv", "id,v", ((name, value) for value in wave for name in ("02134", "2134")))
    for name in ("meters", "infinite", "unordered", "text"):
        (root / name).mkdir()
        for series in ("a", "b"):
            write_csv(root / name / f"{series}.csv", "step,v", zip(range(100), wave))
    write_csv(root / "infinite" / "b.csv", "step,v", [(step, "1e400" if step == 40 else 1.0) for step in range(100)])
    write_csv(root / "text" / "b.csv", "step,v", [(step, "oops" if step == 50 else 1.0) for step in range(100)])
    write_csv(root / "unordered" / "b.csv", "step,v", [(step if step != 20 else 5, 1.0) for step in range(100)])
    runner = CliRunner()
    for data, model, extra in (("plain.csv", "plain.npz", []), ("zoned.csv", "zoned.npz", []),
                               ("long.csv", "long.npz", ["--id-column", "id"])):
        result = runner.invoke(main, ["train", str(root / data), *SMALL, *extra, "-o", str(root / model)])
        assert result.exit_code == 0, result.stderr
    return root


CASES = {
    # -- --from: one meaning, clear refusals (classes 4, 19)
    "--from empty": (["evaluate", "plain.npz", "plain.csv", "--from", ""], "from: the value is empty"),
    "--from blank on a panel": (["evaluate", "long.npz", "long.csv", "--from", " "], "from: the value is empty"),
    "--from before the year 1": (["evaluate", "plain.npz", "plain.csv", "--from", "-0005-01-01"],
                                 "not a date from the year 1 on"),
    "--from more rows than the series": (["evaluate", "plain.npz", "plain.csv", "--from", "-401"],
                                         "from: row -401 is outside the series (rows 0..399, or -400..-1"),
    "--from a date without a time column": (["evaluate", "plain.npz", "plain.csv", "--time-column", "none",
                                             "--from", "2024-01-02"], "has no time column of dates; give a row number"),
    "--from with an offset on plain stamps": (["evaluate", "plain.npz", "plain.csv",
                                               "--from", "2024-01-02T00:00+05:00"],
                                              "has a zone offset, but the time column has none"),
    "--from after the end, in the data's zone": (["evaluate", "zoned.npz", "zoned.csv", "--from", "2024-01-18T00:00"],
                                                 "is after the last time of the series (2024-01-17T15:00+05:00)"),
    "--from after the end, given in UTC": (["evaluate", "zoned.npz", "zoned.csv", "--from", "2024-01-17T11:00Z"],
                                           "is after the last time of the series (2024-01-17T15:00+05:00)"),
    # -- stamps with and without a zone (class 19)
    "a mix of zoned and plain stamps": (["train", "mixed.csv", *SMALL, "-o", "new.npz"],
                                        'mixed.csv, line 32, column "time": the time column mixes stamps with and '
                                        "without a zone offset: '2024-01-02T06:00' has none"),
    # -- ids as written (class 3)
    "--id with a zero too many": (["forecast", "long.npz", "long.csv", "--id", "002134"],
                                  "unknown series id '002134'"),
    # -- options never silently ignored (class 15)
    "--resume --id-column on a single series": (["train", "plain.csv", "--resume", "-o", "plain.npz",
                                                 "--id-column", "x"],
                                                "--id-column x conflicts with the checkpoint's id column unset"),
    "--resume --scale on a single series": (["train", "plain.csv", "--resume", "-o", "plain.npz", "--scale", "global"],
                                            "--scale global conflicts with the checkpoint's scale unset"),
    "--resume --time-column none": (["train", "zoned.csv", "--resume", "-o", "zoned.npz", "--time-column", "none"],
                                    "--time-column none conflicts with the checkpoint's time column 'time'"),
    "--resume on data without its time column": (["train", "long.csv", "--resume", "-o", "plain.npz"],
                                                 "the data's time column none conflicts with the checkpoint's time "
                                                 "column 'time'"),
    "--resume --diagnostics on a checkpoint without": (["train", "plain.csv", "--resume", "-o", "plain.npz",
                                                        "--diagnostics"],
                                                       "--diagnostics conflicts with the checkpoint's diagnostics"),
    "--id-column with a directory": (["train", "meters", *SMALL, "--id-column", "v", "-o", "new.npz"],
                                     "names files of one series each"),
    "evaluate --id-column with a directory": (["evaluate", "long.npz", "meters", "--id-column", "id"],
                                              "names files of one series each"),
    "--key on a CSV file": (["train", "plain.csv", *SMALL, "--key", "v", "-o", "new.npz"],
                            "key 'v': names an array of an .npz archive; plain.csv is not one"),
    "--key with a demo": (["train", "--demo", "sine", *SMALL, "--key", "v", "-o", "new.npz"],
                          "--key applies to a DATA file, not to --demo"),
    "--time-column with a demo panel": (["train", "--demo", "sensors", *SMALL, "--time-column", "t", "-o", "new.npz"],
                                        "--time-column applies to a DATA file, not to --demo"),
    "--id-column with a demo panel": (["evaluate", "long.npz", "--demo", "sensors", "--id-column", "id"],
                                      "id_column: demo:sensors is a panel read already; id_column applies to "
                                      "reading a table or files"),
    "--step-size without --schedule step": (["train", "plain.csv", *SMALL, "--step-size", "5", "-o", "new.npz"],
                                            "--step-size applies to --schedule step"),
    # -- a directory panel names file and line, as a file does (class 19)
    "an infinite value in a directory's file": (["train", "infinite", *SMALL, "-o", "new.npz"],
                                                "infinite/b.csv, line 42, column 'v': an infinite value"),
    "a text cell in a directory's file": (["train", "text", *SMALL, "--time-column", "step", "-o", "new.npz"],
                                          'series "b": text/b.csv, line 52, column "v": not a finite number: \'oops\''),
    "unordered times in a directory's file": (["train", "unordered", *SMALL, "--time-column", "step", "-o", "new.npz"],
                                              "unordered/b.csv: time column 'step' is not increasing at line 22"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_time_input_is_one_error_line_and_touches_nothing(workdir, case):
    args, fragment = CASES[case]
    before = snapshot(workdir)
    assert_bad_input(CliRunner().invoke(main, args, prog_name="bptt"), fragment)
    assert snapshot(workdir) == before
