"""The progress line of `netdef train`/`netdef test`: what it shows, that log records clear it
(the log keeps exactly its lines), and that it stays off when stderr is not a terminal."""
import io
import logging
import re
import signal

import pytest
from click.testing import CliRunner

from netdef_cli.logfmt import GlogFormatter, GlogHandler
from netdef_cli.main import cli
from netdef_cli.progress import ProgressBar, format_duration, wanted


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def screen(text: str) -> list[str]:
    """What a terminal shows after `text`: \\r goes back to column 0, later characters
    overwrite earlier ones (trailing blanks dropped)."""
    lines, cur, col = [], [], 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(cur).rstrip())
            cur, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
    lines.append("".join(cur).rstrip())
    return lines


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 250, 3600 * 2 + 5 * 60 + 9)] == \
        ["0s", "42s", "4m10s", "2h05m"]


def test_wanted_follows_the_terminal_unless_forced():
    assert wanted(None, FakeTTY()) and not wanted(None, io.StringIO())
    assert wanted(True, io.StringIO()) and not wanted(False, FakeTTY())


def test_rendered_line_rate_eta_and_throttle():
    out, clock = FakeTTY(), Clock()
    bar = ProgressBar(10000, out, clock=clock, columns=200)
    bar.update(200, 0.5)
    assert out.getvalue() == "\riter 200/10000 [..........] 2% -- it/s loss 0.5 eta --"
    clock.t = 25.0
    bar.update(1200, 0.231)
    assert screen(out.getvalue()) == \
        ["iter 1200/10000 [#.........] 12% 40.0 it/s loss 0.231 eta 3m40s"]
    before = out.getvalue()
    clock.t = 25.05            # within min_interval: not drawn
    bar.update(1202, 0.2)
    assert out.getvalue() == before
    clock.t = 50.0
    bar.update(5000, 2.5e-7)
    assert screen(out.getvalue()) == \
        ["iter 5000/10000 [#####.....] 50% 96.0 it/s loss 2.5e-07 eta 52s"]
    clock.t = 60.0
    bar.update(5001)           # slow: seconds per iteration, no loss; shorter line
    assert screen(out.getvalue())[-1].startswith("iter 5001/10000 [#####.....] 50% ")
    assert "loss" not in screen(out.getvalue())[-1]
    bar.close()
    assert screen(out.getvalue()) == [""]
    bar.update(6000)           # closed: draws nothing more
    assert screen(out.getvalue()) == [""]


def test_last_iteration_is_always_drawn_and_long_lines_are_cut():
    out, clock = FakeTTY(), Clock()
    bar = ProgressBar(3, out, clock=clock, columns=30, label="batch")
    bar.update(1)
    clock.t = 0.05
    bar.update(2)              # within min_interval: skipped
    clock.t = 1.0
    bar.update(3, 0.125)       # the last: drawn anyway
    shown = screen(out.getvalue())
    assert shown == ["batch 3/3 [##########] 100% 2"]   # "... 2.0 it/s loss ..." cut
    assert len(shown[0]) == 29


def test_log_records_clear_the_bar_and_it_comes_back():
    out, clock = FakeTTY(), Clock()
    log = logging.getLogger("netdef_progress_test")
    log.propagate = False
    log.setLevel(logging.INFO)
    h = GlogHandler(out)
    h.setFormatter(GlogFormatter())
    log.addHandler(h)
    try:
        with ProgressBar(100, out, clock=clock, columns=200).attach(log.name) as bar:
            bar.update(10, 0.75)
            assert h.status is bar
            drawn = out.getvalue()
            log.info("Iteration 10, lr = 0.01")
            text = out.getvalue()[len(drawn):]
            # blank the bar, back to column 0, then the record, then the bar again
            pre, record, post = re.match(r"(\r +\r)(I\d{4} [^\n]*\n)(\r.*)$", text).groups()
            assert len(pre) == len(drawn) + 1
            assert record.endswith("] Iteration 10, lr = 0.01\n")
            assert post.startswith("\riter 10/100 ")
            assert screen(out.getvalue()) == [record[:-1], post[1:]]
            bar.detach()
            assert h.status is None
            log.info("again")           # detached: the record is written as it is
            assert out.getvalue().endswith("\n") and "] again\n" in out.getvalue()
            bar.attach(log.name)
        assert h.status is None and screen(out.getvalue())[-1] == ""
    finally:
        log.removeHandler(h)


NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 }
    data_filler { type: "gaussian" } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


@pytest.fixture
def solver(tmp_path):
    sigs = [signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    saved = {s: signal.getsignal(s) for s in sigs}
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" max_iter: 40 '
        f'display: 10 test_iter: 1 test_interval: 20 snapshot_after_train: false '
        f'snapshot_prefix: "{tmp_path / "run"}" random_seed: 3')
    yield str(tmp_path / "solver.prototxt")
    for s, h in saved.items():
        signal.signal(s, h)


def log_messages(text: str) -> list[str]:
    """The log's messages without glog prefixes and timings (they differ run to run)."""
    msgs = []
    for line in text.split("\n"):
        m = re.match(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\] (.*)$", line)
        assert m or not line, repr(line)
        if m:
            msgs.append(re.sub(r"\(.* iters\)", "(...)", m.group(1)))
    return msgs


def test_train_without_a_terminal_shows_no_bar(solver):
    r = CliRunner().invoke(cli, ["train", "--solver", solver])   # CliRunner: not a tty
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output and "it/s" not in r.output and "[#" not in r.output
    plain = log_messages(r.stderr)
    assert "Optimization Done." in plain and "Iteration 20, Testing net (#0)" in plain

    # forced on: the bar is there, and taking its drawing out leaves exactly the same log
    r = CliRunner().invoke(cli, ["train", "--solver", solver, "--progress"])
    assert r.exit_code == 0, r.output
    assert "\riter 40/40 [##########] 100% " in r.stderr and " it/s loss " in r.stderr
    assert log_messages("\n".join(seg.rsplit("\r", 1)[-1]
                                  for seg in r.stderr.split("\n"))) == plain
    assert all(ln.startswith("I") for ln in screen(r.stderr) if ln), screen(r.stderr)
    assert screen(r.stderr)[-1] == ""          # cleared at the end

    r = CliRunner().invoke(cli, ["train", "--solver", solver, "--no-progress"])
    assert r.exit_code == 0 and "\r" not in r.output


def test_test_command_progress(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    args = ["test", "--model", str(tmp_path / "net.prototxt"), "--iterations", "3", "--json"]
    r = CliRunner().invoke(cli, args + ["--progress"])
    assert r.exit_code == 0, r.output
    assert "\rbatch 3/3 [##########] 100% " in r.stderr
    assert "\r" not in r.stdout                # stdout (the JSON) is untouched
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "\r" not in r.output
