"""Persistence of a search: its configuration and every evaluated candidate.

Layout of a search directory:

    config.json                  the search configuration (checked on resume)
    candidates/0000001.json      one record per proposal, by 1-based proposal id

Every file is written atomically (a temporary file in the same directory,
flushed and fsynced, then `os.replace`), so a search killed at any moment
leaves only complete records; a restart reloads them and continues with the
next proposal id. Left-over temporary files are ignored and removed.
"""

import json
import os
import tempfile

_TEMPORARY_SUFFIX = ".tmp"


def write_json_atomic(path, value):
    """Writes `value` as JSON to `path` atomically (temp file + `os.replace`)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, suffix=_TEMPORARY_SUFFIX)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(value, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


class Store:
    """The records of one search directory.

    Args:
      directory: the search directory (created if missing).
    """

    def __init__(self, directory):
        self.directory = directory
        self.candidates_directory = os.path.join(directory, "candidates")
        os.makedirs(self.candidates_directory, exist_ok=True)

    @property
    def config_path(self):
        return os.path.join(self.directory, "config.json")

    def check_or_write_config(self, config, must_match):
        """Writes the config of a new search, or checks a resumed one's `must_match` keys."""
        if not os.path.exists(self.config_path):
            write_json_atomic(self.config_path, config)
            return
        saved = read_json(self.config_path)
        for key in must_match:
            if saved.get(key) != config.get(key):
                raise ValueError(
                    f"{self.directory} holds a search with {key}={saved.get(key)!r}; "
                    f"cannot resume it with {key}={config.get(key)!r}"
                )

    def path(self, proposal_id):
        return os.path.join(self.candidates_directory, f"{proposal_id:07d}.json")

    def save(self, record):
        write_json_atomic(self.path(record["proposal_id"]), record)

    def load(self):
        """All complete records, sorted by proposal id (temporary files are removed)."""
        records = []
        for name in sorted(os.listdir(self.candidates_directory)):
            path = os.path.join(self.candidates_directory, name)
            if name.endswith(_TEMPORARY_SUFFIX):
                os.remove(path)
                continue
            if name.endswith(".json"):
                records.append(read_json(path))
        records.sort(key=lambda record: record["proposal_id"])
        return records
