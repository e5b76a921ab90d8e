"""A clean console for the commands: no TensorFlow C++ log lines, each Python log line once.

TensorFlow's C++ runtime writes informational lines straight to the
process's stderr (file descriptor 2): "oneDNN custom operations are on",
"Could not find cuda drivers", "Compiled cluster using XLA!", ... Python
cannot silence them through `logging`: `TF_CPP_MIN_LOG_LEVEL` must be set
before TensorFlow is imported, and XLA's absl-logged lines ignore it.
`quiet_native_logs` does both: it sets `TF_CPP_MIN_LOG_LEVEL=3` (for
`python -m evonorm_tf.<command>`, `quiet_command_start` does so when the
package is imported, before TensorFlow) and routes descriptor 2 through a
filter that drops the C++ log lines; Python's own
`sys.stderr` (warnings, errors, absl's Python log) keeps writing to the
console directly.

A user who sets `TF_CPP_MIN_LOG_LEVEL` themselves chooses the C++ logs: then
nothing is filtered.

Orbit's controller (Model Garden's training loop) both prints its progress
lines to stdout and logs them through absl; `drop_orbit_echo` removes the
logged copy so that each progress line appears once on the console.
"""

import atexit
import logging
import os
import re
import sys
import threading

_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Set with the level when this module set it, not the user.
_MARKER_VARIABLE = "EVONORM_TF_QUIET_NATIVE_LOGS"

# C++ log lines: TSL's "2026-01-01 12:00:00.000000: I path.cc:12] ...", absl's
# "I0000 00:00:1796588151.306214    8917 path.h:196] ...", absl's one-off
# warning about logging before InitializeLog, and the second line of TSL's
# CPU-feature notice.
NATIVE_LOG_LINE = re.compile(
    rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\]"
    rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)


def quiet_command_start():
    """Sets `TF_CPP_MIN_LOG_LEVEL=3` while a `python -m evonorm_tf.<command>` imports the package.

    Called by `evonorm_tf/__init__.py` before TensorFlow is imported. It acts
    only for commands run with `python -m` (while Python imports the package
    of a `-m` module, `sys.argv[0]` is `"-m"`), never for a program that
    imports the library, and never when the user set the level.
    """
    if sys.argv[:1] == ["-m"] and _LEVEL_VARIABLE not in os.environ and "tensorflow" not in sys.modules:
        os.environ[_LEVEL_VARIABLE] = "3"
        os.environ[_MARKER_VARIABLE] = "1"


def quiet_native_logs():
    """Hides TensorFlow's C++ log lines for the rest of this command, unless the user set a level.

    Call it first thing under `if __name__ == "__main__":`. Sets
    `TF_CPP_MIN_LOG_LEVEL=3` (effective if TensorFlow is not imported yet;
    `quiet_command_start` sets it at the package import of `python -m`
    commands) and filters the C++ lines that ignore it (XLA's absl logs)
    out of file descriptor 2.
    """
    if _LEVEL_VARIABLE in os.environ and os.environ.get(_MARKER_VARIABLE) != "1":
        return  # the user's choice
    os.environ[_LEVEL_VARIABLE] = "3"
    os.environ[_MARKER_VARIABLE] = "1"
    _filter_descriptor_2()


def _filter_descriptor_2():
    """Routes file descriptor 2 through a thread that drops `NATIVE_LOG_LINE`s."""
    sys.stderr.flush()
    console = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # Python's own stderr writes to the console directly, unfiltered.
    sys.stderr = os.fdopen(os.dup(console), "w", buffering=1, encoding=sys.stderr.encoding,
                           errors="backslashreplace")

    def forward():
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not NATIVE_LOG_LINE.match(line):
                    os.write(console, line + b"\n")
        if pending and not NATIVE_LOG_LINE.match(pending):
            os.write(console, pending)

    thread = threading.Thread(target=forward, name="native-log-filter", daemon=True)
    thread.start()

    def restore():
        os.dup2(console, 2)  # closes the pipe's last write end: the thread sees end of file
        thread.join(timeout=5)

    atexit.register(restore)


class _OrbitEchoFilter(logging.Filter):
    """Drops the log records of Orbit's controller progress lines (also printed to stdout).

    Orbit's `controller._log` prints and logs; absl skips that frame, so the
    record names its caller. Every INFO record of orbit/controller.py comes
    from `_log` but its checkpoint-sync notice, which is not printed.
    """

    NOT_PRINTED = ("Sync on async checkpoint saving.",)

    def filter(self, record):
        from_controller = record.pathname.replace("\\", "/").endswith("orbit/controller.py")
        return not (from_controller and record.levelno == logging.INFO
                    and record.getMessage() not in self.NOT_PRINTED)


def drop_orbit_echo():
    """Makes each Orbit progress line, and each TensorFlow log line, appear once on the console.

    Orbit's progress lines are printed to stdout: their absl copy is dropped.
    TensorFlow's Python logger gets its own stderr handler (Python's basic
    format, `INFO:tensorflow:...`) when it is first used, and also passes its
    records on to absl's handler on the root logger: its own handler goes.
    """
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    if not any(isinstance(existing, _OrbitEchoFilter) for existing in handler.filters):
        handler.addFilter(_OrbitEchoFilter())
    tensorflow_logger = logging.getLogger("tensorflow")
    if handler in logging.getLogger().handlers and tensorflow_logger.propagate:
        for own in list(tensorflow_logger.handlers):
            tensorflow_logger.removeHandler(own)
