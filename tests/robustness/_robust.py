"""Helpers of the robustness suite (fixtures are in conftest.py)."""

import os
import subprocess
import sys

ENV = dict(os.environ, KERAS_BACKEND="tensorflow")
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must be quiet without the user's help
ENV.pop("KERAS_FR_VERBOSE", None)


def run_cli(*args, timeout=240, **popen):
    """The real ``keras-fr`` command in a subprocess (``python -m keras_fr.cli``), as a user runs it."""
    return subprocess.run([sys.executable, "-m", "keras_fr.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout, **popen)


def one_error_line(err, command, *fragments):
    """Assert ``err`` (stderr) is exactly one ``keras-fr COMMAND: error: ...`` line holding every
    fragment, with no traceback; return the line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err[:3000]}"
    line = lines[0]
    assert line.startswith(f"keras-fr {command}: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def cli_error(capsys, argv, *fragments):
    """Run ``keras_fr.cli.main(argv)`` in-process; assert exit code 2 and one error line."""
    from keras_fr import cli

    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}\nstdout: {captured.out[:2000]}\nstderr: {captured.err[:2000]}"
    return one_error_line(captured.err, argv[0], *fragments)


def leftovers(folder):
    """Files in ``folder`` (recursively) other than the inputs a test made: hidden temporaries included."""
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.join(root, n) for n in names]
    return sorted(found)


