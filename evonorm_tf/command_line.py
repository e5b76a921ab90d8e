"""Command-line error handling shared by every entry point: bad input as one line.

Every command of this package (`python -m evonorm_tf.demo`, the
`tpu_scripts/*.py` drivers, ...) answers bad input — a missing file, a glob
that matches nothing, a negative count, an unknown name, malformed YAML — with
one line on stderr naming the value and what is valid, and a non-zero exit
status, never a Python traceback:

    python -m evonorm_tf.demo: error: argument --batch-sizes: expected comma-separated integers >= 1, received '-2'

argparse commands build their parser with `ArgumentParser` (its usage errors
are one line) and run their `main` through `run`; absl commands run through
`run_absl` (flag errors are one line too):

    if __name__ == "__main__":
        command_line.run(main, prog="python -m evonorm_tf.demo")

The library validates its arguments where they are received and raises
`ValueError` or `TypeError` naming the value; `run` turns these (and missing
files, `OSError`) into the one line. Set the environment variable
`EVONORM_TF_TRACEBACK=1` to see the full traceback instead.
"""

import argparse
import os
import sys

# Exit status of bad input (argparse's status for usage errors).
BAD_INPUT_STATUS = 2
TRACEBACK_VARIABLE = "EVONORM_TF_TRACEBACK"


class CommandLineError(Exception):
    """A bad command-line value; its message names the value and what is valid."""


def expected_errors():
    """The exception types reported as one line: the library's argument errors and missing files."""
    types = [CommandLineError, ValueError, TypeError, KeyError, OSError]
    try:
        import yaml  # malformed YAML files (Model Garden's configs)

        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - yaml comes with Model Garden
        pass
    return tuple(types)


def one_line(error):
    """The message of `error` on one line (a KeyError's message is its first argument)."""
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    else:
        message = str(error)
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return message or type(error).__name__


def report(prog, message, status=BAD_INPUT_STATUS):
    """Writes `prog: error: message` as one line on stderr and exits with `status`."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(status)


def call(main, prog, *args):
    """Calls `main(*args)`; an expected error becomes one line on stderr and exit status 2.

    Returns what `main` returns. `KeyboardInterrupt` exits with status 130
    and one line. With `EVONORM_TF_TRACEBACK=1` errors propagate unchanged.
    """
    if os.environ.get(TRACEBACK_VARIABLE, "").strip() not in ("", "0"):
        return main(*args)
    try:
        return main(*args)
    except KeyboardInterrupt:
        report(prog, "interrupted", status=130)
    except expected_errors() as error:
        report(prog, one_line(error))


def run(main, prog=None, argv=None):
    """Runs an argparse command's `main(argv)`; exits with its return value if an int, else 0."""
    prog = prog or os.path.basename(sys.argv[0])
    status = call(main, prog, argv)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one line on stderr (exit status 2).

    The standard parser prints the usage block before the error; here the
    error line ends with a pointer to `--help` instead.
    """

    def error(self, message):
        report(self.prog, f"{one_line(message)} (see {self.prog} --help)")


def absl_flags_parser(prog):
    """A `flags_parser` for `absl.app.run` that reports flag errors as one line."""

    def parse(argv):
        from absl import flags

        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            report(prog, f"{one_line(error)} (see {prog} --helpshort)")

    return parse


def run_absl(main, prog=None):
    """`absl.app.run(main)` with flag errors and expected errors of `main` as one line each."""
    from absl import app

    prog = prog or os.path.basename(sys.argv[0])
    app.run(lambda argv: call(main, prog, argv), flags_parser=absl_flags_parser(prog))
