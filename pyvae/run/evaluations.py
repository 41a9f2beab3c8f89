"""Every finished evaluation of a run, kept: ``RUN_DIR/evaluations/`` holds one JSON file per
evaluation (the dict ``Run.evaluate`` returns, its settings included) and ``index.json``, one
entry per file in the order they were written; eval.json stays the latest.

File names say what was measured: ``0003-test-K5000-n500.json`` (the third evaluation: the
test split, K = 5000 importance samples, 500 datapoints), ``...-ais1000`` with AIS. A run
directory written before evaluations were kept has at most eval.json, which is listed as the
one evaluation it knows.
"""
import datetime
import json
import os
import re
from typing import List, Optional

from ..errors import ConfigError
from ..training.checkpoint import EVAL, EVALUATIONS, write_json

INDEX = "index.json"
#: the settings an index entry repeats from its evaluation (what the numbers depend on)
SETTINGS = ("split", "num_samples", "num_datapoints", "seed", "batch_size", "chunk_size",
            "ais_steps", "ais_chains", "epoch")
_NAME = re.compile(r"^(\d{4,})-.+\.json$")


def evaluation_name(seq: int, result: dict) -> str:
    """The file name of evaluation number ``seq`` (from 1) with ``result``."""
    name = (f"{seq:04d}-{result.get('split', 'data')}-K{result['num_samples']}"
            f"-n{result['num_datapoints']}")
    if result.get("ais_steps"):
        name += f"-ais{result['ais_steps']}"
    return name + ".json"


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None


def list_evaluations(run_dir: str) -> List[dict]:
    """The index entries of ``run_dir``'s kept evaluations, oldest first: ``name`` (the file
    under evaluations/), ``written`` (UTC, ISO 8601), the ``SETTINGS`` and ``log_px``. A run
    from before evaluations were kept lists its eval.json (name "eval.json"), if it has one."""
    index = os.path.join(run_dir, EVALUATIONS, INDEX)
    if os.path.isfile(index):
        entries = _read_json(index)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e
                                                    for e in entries):
            raise ConfigError(f"{index} is damaged: expected a list of entries with a name")
        return entries
    latest = os.path.join(run_dir, EVAL)
    if os.path.isfile(latest):
        result = _read_json(latest)
        return [dict(_entry(result), name=EVAL, written=None)]
    return []


def find_evaluation(run_dir: str, name: Optional[str] = None) -> dict:
    """The index entry (``list_evaluations``) of a kept evaluation; one ConfigError line when
    there is none: no evaluation yet, or the names of those kept.

    Args:
        run_dir: the run directory.
        name: a file name under evaluations/, or its number as in "0003"; None (or
            "eval.json"): the latest.
    """
    entries = list_evaluations(run_dir)
    if name is None or name == EVAL:
        if not entries or not os.path.isfile(os.path.join(run_dir, EVAL)):
            raise ConfigError(f"{run_dir} has no evaluation yet: run pyvae evaluate {run_dir}")
        return entries[-1]
    matches = [e for e in entries if e["name"] in (name, f"{name}.json")
               or e["name"].split("-")[0] == name]
    if len(matches) != 1:
        raise ConfigError(f"{run_dir} has no evaluation {name!r}; it has: "
                          f"{', '.join(e['name'] for e in entries) or 'none'}")
    return matches[0]


def read_evaluation(run_dir: str, name: Optional[str] = None) -> dict:
    """A kept evaluation by ``name`` (a file name from ``list_evaluations``, or its number as
    in "0003"); None: the latest (eval.json)."""
    if name is None or name == EVAL:
        path = os.path.join(run_dir, EVAL)
        if not os.path.isfile(path):
            raise ConfigError(f"{run_dir} has no evaluation yet: run pyvae evaluate {run_dir}")
        return _read_json(path)
    found = find_evaluation(run_dir, name)["name"]
    return _read_json(os.path.join(run_dir, found) if found == EVAL
                      else os.path.join(run_dir, EVALUATIONS, found))


def _entry(result: dict) -> dict:
    return {**{k: result.get(k) for k in SETTINGS}, "log_px": result.get("log_px")}


def keep_evaluation(run_dir: str, result: dict) -> str:
    """Write ``result`` as the next file under evaluations/ and add it to the index (each
    file atomically: a crash leaves the previous index whole); returns the file's path."""
    folder = os.path.join(run_dir, EVALUATIONS)
    os.makedirs(folder, exist_ok=True)
    entries = list_evaluations(run_dir) if os.path.isfile(os.path.join(folder, INDEX)) else []
    taken = [int(m.group(1)) for f in os.listdir(folder) for m in [_NAME.match(f)] if m]
    name = evaluation_name(max(taken, default=0) + 1, result)
    path = os.path.join(folder, name)
    written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(path, result)
    write_json(os.path.join(folder, INDEX), entries + [dict(_entry(result), name=name,
                                                            written=written)])
    return path
