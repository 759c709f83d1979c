"""Read training curves back: a netdef metrics file (``<snapshot_prefix>_metrics.jsonl``) or a
Caffe / netdef text log (glog lines, as BVLC Caffe's ``tools/extra/parse_log.py`` reads them).

Both give the same rows (plain Python, no plotting library needed)::

    train: {"iter": 100, "loss": 0.2, "lr": 0.01, "outputs": {"loss": 0.2}, "time": 12.5}
    test:  {"iter": 500, "net": 0, "outputs": {"accuracy": 0.98, "loss": 0.05}, "time": 60.1}

``loss`` is the displayed (``average_loss``-smoothed) training loss; ``lr``, ``loss`` and
``time`` are ``None`` where the input does not say.  ``time`` is seconds since the first record
(from the glog timestamps of a log).  An output blob with several values is a list, as in the
metrics file.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime

from .errors import FileFormatError

__all__ = ["caffe_csv", "parse_file", "parse_log_lines", "parse_metrics_lines", "series_json"]

_NUM = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)"
# glog prefix: I1127 03:56:55.123456 12345 solver.cpp:228] message
_GLOG = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)(\.\d+)?\s+\d+\s+[^\]\s]*\] ?(.*)$")
_TRAIN_LOSS = re.compile(rf"\bIteration (\d+)(?: \([^)]*\))?, loss = ({_NUM})", re.IGNORECASE)
_LR = re.compile(rf"\bIteration (\d+), lr = ({_NUM})", re.IGNORECASE)
_TESTING = re.compile(r"\bIteration (\d+), Testing net \(#(\d+)\)")
_ITERATION = re.compile(r"\bIteration (\d+)")
_OUTPUT = re.compile(rf"\b(Train|Test) net output #(\d+): (\S+) = ({_NUM})", re.IGNORECASE)
_TEST_LOSS = re.compile(rf"^\s*Test loss: ({_NUM})", re.IGNORECASE)


def _num(s: str) -> float:
    return float(s)


def _add_output(outputs: dict, name: str, value: float) -> None:
    """A repeated name is one blob with several values (Caffe logs each element)."""
    if name not in outputs:
        outputs[name] = value
    elif isinstance(outputs[name], list):
        outputs[name].append(value)
    else:
        outputs[name] = [outputs[name], value]


class _Clock:
    """Seconds since the first glog timestamp (glog lines carry no year: a step back in time
    of more than a day is taken as a new year)."""

    def __init__(self):
        self.first = None
        self.last = None
        self.offset = 0.0

    def seconds(self, m) -> float:
        mon, day, hh, mm, ss, frac = m.group(1, 2, 3, 4, 5, 6)
        try:   # 2000 is a leap year, so 0229 parses
            t = (datetime(2000, int(mon), int(day), int(hh), int(mm), int(ss))
                 - datetime(2000, 1, 1)).total_seconds()
        except ValueError:
            return None
        t += float(frac) if frac else 0.0
        if self.first is None:
            self.first = t
        elif t + self.offset < self.last - 86400:
            self.offset += 366 * 86400
        self.last = t + self.offset
        return round(self.last - self.first, 6)


def parse_log_lines(lines, as_parse_log: bool = False) -> tuple[list[dict], list[dict]]:
    """Train and test rows from a Caffe or netdef text log.  ``as_parse_log``: ``time`` as
    parse_log.py's Seconds: of a row's first output line, counted from the solver's "Solving
    NAME" line where the log has one (else from the first timestamp)."""
    train: list[dict] = []
    test: list[dict] = []
    clock = _Clock()
    iteration = None
    cur_test = None
    solving = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        m = _GLOG.match(line)
        seconds = None
        if m:
            seconds = clock.seconds(m)
            line = m.group(7)
            if solving is None and "Solving" in line:
                solving = seconds

        t = _TESTING.search(line)
        if t:
            iteration = int(t.group(1))
            cur_test = {"iter": iteration, "net": int(t.group(2)), "outputs": {},
                        "time": seconds}
            test.append(cur_test)
            continue
        t = _TRAIN_LOSS.search(line)
        if t:
            iteration = int(t.group(1))
            cur_test = None
            last = train[-1] if train else None
            if last is not None and last["iter"] == iteration and last["loss"] is None \
                    and not last["outputs"]:
                last["loss"] = _num(t.group(2))
            else:
                train.append({"iter": iteration, "loss": _num(t.group(2)), "lr": None,
                              "outputs": {}, "time": seconds})
            continue
        t = _LR.search(line)
        if t:
            iteration = int(t.group(1))
            cur_test = None
            last = train[-1] if train else None
            if last is not None and last["iter"] == iteration and last["lr"] is None:
                last["lr"] = _num(t.group(2))
            else:
                train.append({"iter": iteration, "loss": None, "lr": _num(t.group(2)),
                              "outputs": {}, "time": seconds})
            continue
        t = _OUTPUT.search(line)
        if t:
            kind, name, value = t.group(1).lower(), t.group(3), _num(t.group(4))
            if kind == "train":
                if not train or (iteration is not None and train[-1]["iter"] != iteration):
                    train.append({"iter": iteration if iteration is not None else 0,
                                  "loss": None, "lr": None, "outputs": {}, "time": seconds})
                _first_output_time(train[-1], seconds, as_parse_log)
                _add_output(train[-1]["outputs"], name, value)
            else:
                if cur_test is None:
                    cur_test = {"iter": iteration if iteration is not None else 0, "net": 0,
                                "outputs": {}, "time": seconds}
                    test.append(cur_test)
                _first_output_time(cur_test, seconds, as_parse_log)
                _add_output(cur_test["outputs"], name, value)
            continue
        t = _TEST_LOSS.search(line)
        if t and cur_test is not None:
            cur_test["loss"] = _num(t.group(1))
            continue
        t = _ITERATION.search(line)
        if t:
            iteration = int(t.group(1))
            cur_test = None
    # Caffe logs the lr after the loss of the same iteration, and not at all for the final
    # "Iteration N, loss = L" line: like parse_log.py, the first row borrows the second's lr.
    if len(train) > 1 and train[0]["lr"] is None:
        train[0]["lr"] = train[1]["lr"]
    if as_parse_log and solving:
        for r in train + test:
            if r["time"] is not None:
                r["time"] = round(r["time"] - solving, 6)
    return train, test


def _first_output_time(row: dict, seconds, as_parse_log: bool) -> None:
    if as_parse_log and not row["outputs"] and seconds is not None:
        row["time"] = seconds


def parse_metrics_lines(lines, file: str | None = None) -> tuple[list[dict], list[dict]]:
    """Train and test rows from a netdef ``*_metrics.jsonl`` (one JSON object a line; a
    half-written last line of a run still in progress is skipped)."""
    lines = list(lines)
    train: list[dict] = []
    test: list[dict] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise TypeError("not a JSON object")
            phase = rec.get("phase")
            if "iter" not in rec:
                raise ValueError("no 'iter' field")
            it = int(rec["iter"])
        except (ValueError, TypeError) as e:
            if n == len(lines) and not raw.endswith("\n"):
                break
            raise FileFormatError(f"line {n}: not a metrics record ({e})", file=file) from None
        outputs = rec.get("outputs") or {}
        if phase == "train":
            train.append({"iter": it, "loss": rec.get("loss"), "lr": rec.get("lr"),
                          "outputs": outputs, "time": rec.get("time")})
        elif phase == "test":
            row = {"iter": it, "net": int(rec.get("net", 0)), "outputs": outputs,
                   "time": rec.get("time")}
            if "loss" in rec:
                row["loss"] = rec["loss"]
            test.append(row)
    return train, test


def parse_file(path: str, as_parse_log: bool = False) -> tuple[list[dict], list[dict]]:
    """Rows from a metrics file or a text log, told apart by their first non-blank line.
    A file with neither training nor test records is a :class:`FileFormatError`.
    ``as_parse_log``: see :func:`parse_log_lines`."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise FileFormatError("file not found", file=path) from None
    except IsADirectoryError:
        raise FileFormatError("is a directory, not a log or metrics file", file=path) from None
    except OSError as e:
        raise FileFormatError(f"cannot read ({e.strerror or e})", file=path) from None
    first = next((ln for ln in lines if ln.strip()), "")
    if first.lstrip().startswith("{"):
        train, test = parse_metrics_lines(lines, file=path)
    else:
        train, test = parse_log_lines(lines, as_parse_log)
    if not train and not test:
        what = "empty file" if not first else "no training or test records found"
        raise FileFormatError(f"{what} (expected a Caffe/netdef log or a netdef "
                              f"*_metrics.jsonl)", file=path)
    return train, test


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def series_json(path: str, train: list[dict], test: list[dict]) -> str:
    """One line of JSON (NaN and infinities become null, so every JSON reader takes it)."""
    return json.dumps({"file": path, "train": _finite(train), "test": _finite(test)})


def _columns(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for r in rows:
        for k, v in r["outputs"].items():
            if isinstance(v, list):
                for i in range(len(v)):
                    names.setdefault(f"{k}[{i}]", None)
            else:
                names.setdefault(k, None)
    return list(names)


def _cells(outputs: dict) -> dict:
    out = {}
    for k, v in outputs.items():
        if isinstance(v, list):
            out.update({f"{k}[{i}]": x for i, x in enumerate(v)})
        else:
            out[k] = v
    return out


def caffe_csv(train: list[dict], test: list[dict], delimiter: str = ",") -> tuple[str, str]:
    """The text of Caffe's ``parse_log.py`` files ``LOG.train`` and ``LOG.test``, as that
    script writes them: columns ``NumIters, Seconds, LearningRate``, then each output in order
    of first appearance (a blob of several values: ``name[0]``, ``name[1]``...); numbers as
    Python floats (``NumIters`` too: ``100.0``); excel-dialect rows (``\\r\\n``).

    parse_log.py gives a row the last ``lr = `` value logged before the row's outputs.  Caffe
    logs iteration N's rate after N's outputs (and tests at N before N's step), so that is the
    rate of the last training row before iteration N; the first row of each file, which has
    none, takes the second row's (parse_log.py's ``fix_initial_nan_learning_rate``)."""
    import csv
    import io

    def fmt(v):
        if v is None:
            return ""
        return repr(float(v)) if isinstance(v, (int, float)) else str(v)

    lrs = [(r["iter"], r["lr"]) for r in train if r.get("lr") is not None]

    def lr_before(it):
        best = math.nan
        for i, lr in lrs:
            if i < it:
                best = lr
        return best

    texts = []
    for rows in (train, test):
        rows = [r for r in rows if r["outputs"]]
        cols = ["NumIters", "Seconds", "LearningRate"] + _columns(rows)
        lr = [lr_before(r["iter"]) for r in rows]
        if len(lr) > 1:
            lr[0] = lr[1]
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
        w.writerow(cols)
        for r, rate in zip(rows, lr):
            cells = _cells(r["outputs"])
            w.writerow([fmt(r["iter"]), fmt(r.get("time")), fmt(rate)]
                       + [fmt(cells.get(c)) for c in cols[3:]])
        texts.append(buf.getvalue())
    return texts[0], texts[1]
