"""In-process tests of the command line: argument parsing, PID file, broker import, exit codes."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenroom
from greenroom import _globals
from greenroom.brokers.stub import StubBroker
from greenroom.cli import ExitCode, main, make_argument_parser
from greenroom.cli._args import DEFAULT_PROCESSES, options_from_namespace, redact_url
from greenroom.cli._pidfile import PidFileError, remove_pidfile, write_pidfile
from greenroom.cli._worker_process import import_broker


def parse(*argv: str):
    return options_from_namespace(make_argument_parser().parse_args(list(argv)))


def test_defaults_match_dramatiq() -> None:
    options = parse("app")
    assert options.broker == "app"
    assert options.modules == ()
    assert options.processes == DEFAULT_PROCESSES == (os.cpu_count() or 1)
    assert options.threads == 8
    assert options.path == (".",)
    assert options.queues is None
    assert options.pid_file is None
    assert options.log_file is None
    assert not options.skip_logging
    assert not options.use_spawn
    assert not options.burst
    assert options.forks == ()
    assert options.worker_fork_timeout_ms == 30_000
    assert options.worker_shutdown_timeout_ms == 600_000
    assert options.max_tasks_per_child is None
    assert options.max_memory_per_child_mb is None
    assert options.time_limit_grace_ms == 5_000
    assert options.watch is None
    assert not options.watch_use_polling
    assert options.include_patterns == ("**.py",)
    assert options.exclude_patterns == ()
    assert options.verbose == 0


def test_every_flag(tmp_path: Path) -> None:
    options = parse(
        "app:broker", "tasks.a", "tasks.b",
        "-p", "3", "-t", "16",
        "--pid-file", "x.pid", "--log-file", "x.log", "--skip-logging", "--use-spawn",
        "-f", "m:f1", "--fork-function", "m:f2",
        "--worker-fork-timeout", "2500.5", "--worker-shutdown-timeout", "1000",
        "--max-tasks-per-child", "50", "--max-memory-per-child", "300", "--time-limit-grace", "0",
        "--watch", str(tmp_path), "--watch-use-polling", "-i", "*.html", "-x", "tests/*",
        "-vv", "--burst",
        "-P", "src", "lib", "-Q", "default", "emails",
    )  # fmt: skip
    assert options.broker == "app:broker"
    assert options.modules == ("tasks.a", "tasks.b")
    assert (options.processes, options.threads) == (3, 16)
    assert options.path == ("src", "lib")
    assert options.queues == frozenset({"default", "emails"})
    assert (options.pid_file, options.log_file) == ("x.pid", "x.log")
    assert options.skip_logging
    assert options.use_spawn
    assert options.burst
    assert options.forks == ("m:f1", "m:f2")
    assert options.worker_fork_timeout_ms == 2500.5
    assert options.worker_shutdown_timeout_ms == 1000
    assert (options.max_tasks_per_child, options.max_memory_per_child_mb, options.time_limit_grace_ms) == (50, 300, 0)
    assert options.watch == str(tmp_path.resolve())
    assert options.watch_use_polling
    assert options.include_patterns == ("**.py", "*.html")
    assert options.exclude_patterns == ("tests/*",)
    assert options.verbose == 2


def test_include_patterns_do_not_leak_between_parses() -> None:
    assert parse("app", "-i", "*.txt").include_patterns == ("**.py", "*.txt")
    assert parse("app").include_patterns == ("**.py",)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["app", "--bogus"],
        ["app", "-p", "0"],
        ["app", "-t", "many"],
        ["app", "--worker-fork-timeout", "5"],
        ["app", "--worker-fork-timeout", "1800001"],
        ["app", "--worker-fork-timeout", "soon"],
        ["app", "--worker-shutdown-timeout", "-1"],
        ["app", "--max-tasks-per-child", "0"],
        ["app", "--max-memory-per-child", "lots"],
        ["app", "--time-limit-grace", "-1"],
        ["app", "--watch", "/no/such/directory"],
        ["app", "-f", "no_colon"],
    ],
)
def test_bad_arguments_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        make_argument_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: greenroom")
    assert "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        make_argument_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == greenroom.__version__


def test_exit_codes_keep_dramatiq_values() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4]
    assert (ExitCode.OK, ExitCode.KILLED, ExitCode.IMPORT, ExitCode.CONNECTION, ExitCode.PIDFILE) == (0, 1, 2, 3, 4)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:secret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        ("redis://localhost:6379", "redis://localhost:6379"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# -- PID file -------------------------------------------------------------------------------


def test_pidfile_written_and_removed(tmp_path: Path) -> None:
    path = str(tmp_path / "gr.pid")
    write_pidfile(path)
    assert Path(path).read_text() == str(os.getpid())
    assert (Path(path).stat().st_mode & 0o777) == 0o644
    write_pidfile(path)  # our own PID (a re-exec): kept
    remove_pidfile(path)
    assert not Path(path).exists()


def test_pidfile_stale_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "gr.pid"
    path.write_text("999999999")
    write_pidfile(str(path))
    assert path.read_text() == str(os.getpid())


def test_pidfile_garbage_and_running(tmp_path: Path) -> None:
    path = tmp_path / "gr.pid"
    path.write_text("not a pid")
    with pytest.raises(PidFileError, match="garbage"):
        write_pidfile(str(path))
    path.write_text(str(os.getppid()))
    with pytest.raises(PidFileError, match="already running"):
        write_pidfile(str(path))


def test_main_exits_4_when_pidfile_is_held(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid_file = tmp_path / "gr.pid"
    pid_file.write_text(str(os.getppid()))
    namespace = make_argument_parser().parse_args(["app", "--pid-file", str(pid_file), "-P", str(tmp_path)])
    saved_path = list(sys.path)
    try:
        assert main(namespace) == ExitCode.PIDFILE
    finally:
        sys.path[:] = saved_path
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "already running" in err


# -- BROKER argument ------------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    saved = _globals._broker
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("cliapp_")]:
        del sys.modules[name]
    _globals._broker = saved


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_broker_from_module_uses_the_global_broker(app_dir: Path) -> None:
    write_module(
        app_dir,
        "cliapp_module",
        """
        import greenroom
        from greenroom.brokers.stub import StubBroker
        broker = StubBroker()
        greenroom.set_broker(broker)
        """,
    )
    broker = import_broker("cliapp_module")
    assert broker is sys.modules["cliapp_module"].broker
    assert greenroom.get_broker() is broker


def test_broker_from_attribute_is_not_made_global(app_dir: Path) -> None:
    write_module(
        app_dir,
        "cliapp_attr",
        """
        from greenroom.brokers.stub import StubBroker
        class Holder:
            broker = StubBroker()
        """,
    )
    greenroom.set_broker(StubBroker())
    before = greenroom.get_broker()
    broker = import_broker("cliapp_attr:Holder.broker")
    assert broker is sys.modules["cliapp_attr"].Holder.broker
    assert greenroom.get_broker() is before


def test_broker_from_callable(app_dir: Path) -> None:
    write_module(
        app_dir,
        "cliapp_callable",
        """
        import greenroom
        from greenroom.brokers.stub import StubBroker
        made = []
        def setup():
            made.append(StubBroker())
            greenroom.set_broker(made[0])
        """,
    )
    broker = import_broker("cliapp_callable:setup")
    assert broker is sys.modules["cliapp_callable"].made[0]


def test_broker_import_errors(app_dir: Path) -> None:
    write_module(app_dir, "cliapp_plain", "value = 42\n")
    with pytest.raises(ImportError):
        import_broker("cliapp_no_such_module")
    with pytest.raises(ImportError, match="does not define 'missing'"):
        import_broker("cliapp_plain:missing")
    with pytest.raises(ImportError, match="is not a broker"):
        import_broker("cliapp_plain:value")


def test_restart_pause_grows_and_is_capped() -> None:
    from greenroom.cli._supervisor import MAX_RESTART_PAUSE_S, restart_pause_s

    pauses = [restart_pause_s(n) for n in range(1, 10)]
    assert pauses[:5] == [0.0, 1.0, 2.0, 4.0, 8.0]  # the first death is replaced at once
    assert pauses == sorted(pauses)
    assert pauses[-1] == MAX_RESTART_PAUSE_S


@pytest.mark.parametrize(
    ("path", "include", "exclude", "expected"),
    [
        ("/src/app.py", ("**.py",), (), True),
        ("/src/pkg/sub/mod.py", ("**.py",), (), True),
        ("/src/notes.txt", ("**.py",), (), False),
        ("/src/templates/a.html", ("**.py", "*.html"), (), True),
        ("/src/tests/test_a.py", ("**.py",), ("tests/*",), False),
        ("/src/app.py", ("**.py",), ("app.py",), False),
    ],
)
def test_watch_patterns(path: str, include: tuple[str, ...], exclude: tuple[str, ...], expected: bool) -> None:
    from greenroom.cli._watch import matches

    assert matches(path, "/src", include, exclude) is expected


@pytest.mark.parametrize(
    ("signals", "state", "reload"),
    [
        ([signal.SIGTERM], "stopping", False),
        ([signal.SIGINT], "stopping", False),
        ([signal.SIGTERM, signal.SIGTERM], "killing", False),
        ([signal.SIGINT, signal.SIGTERM], "killing", False),
        ([signal.SIGHUP], "stopping", True),
        ([signal.SIGHUP, signal.SIGHUP], "stopping", True),
        ([signal.SIGHUP, signal.SIGTERM], "stopping", False),
        ([signal.SIGHUP, signal.SIGTERM, signal.SIGTERM], "killing", False),
        ([signal.SIGTERM, signal.SIGHUP], "stopping", False),
    ],
)
def test_supervisor_signal_transitions(signals: list[int], state: str, reload: bool) -> None:
    from greenroom.cli._log_pipes import LogForwarder, LogOutput
    from greenroom.cli._supervisor import Supervisor

    forwarder = LogForwarder(LogOutput())
    supervisor = Supervisor(parse("app", "-p", "1"), forwarder)
    try:
        for signum in signals:
            supervisor.signals.put(signum)
        supervisor._handle_signals()  # no process was started: only the decisions are exercised
        assert supervisor.state.value == state
        assert supervisor.reload is reload
    finally:
        supervisor.close()
        forwarder.stop()
