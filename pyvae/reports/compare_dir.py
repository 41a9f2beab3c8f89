"""A comparison's directory on disk (``pyvae compare --out OUT``): one writer, nothing of the
user's replaced, ``--overwrite`` all or nothing, an interrupted comparison continued.

* What ``OUT`` may be: missing or empty (a new comparison); an unfinished comparison of the same
  settings (continued); with ``--overwrite``, anything but a training run or a directory holding
  the ``--shared-decoder`` run. A finished comparison, another one's unfinished work and a
  directory of someone's files are refused without ``--overwrite``; a training run always (a
  comparison writes only into a directory of its own).
* Continuing: ``OUT/compare-progress.json`` records what the comparison is (its settings and
  the sha256 of its data and of the shared decoder) and each finished family's row. Rerunning
  the same comparison keeps the finished families, resumes the family whose training was
  stopped from its checkpoint, and trains the rest; different settings are refused with one
  line naming the flag.
* All or nothing: with ``--overwrite`` the new comparison is built in a locked temp sibling
  ``.tmp-NAME-compare`` and exchanged with ``OUT`` once its report is written, so an old
  comparison is replaced whole (no family folder of it survives) or, if the new one fails or is
  stopped, left as it was.
* Continuing a replacement: a stopped ``--overwrite`` comparison keeps its temp sibling, with
  its own progress file. The same command again continues it as above (``OUT`` still
  untouched until the exchange); other settings, data or decoder, or a damaged progress file,
  discard it (one log line says why) and the replacement starts over. A temp sibling locked by
  a live process is never touched: one line says it is in use.
"""
import json
import math
import os
import shutil
from typing import Optional, Sequence

from ..errors import ConfigError
from ..run import good_records
from ..training.checkpoint import is_run_dir, write_json
from ..training.rundir import (STAGED_SUFFIX, TMP_PREFIX, dir_mode, lock, remove_stale_siblings,
                               remove_stale_temp_files, replace_with)

PROGRESS = "compare-progress.json"
REPORT = "compare.json"
FORMAT = "pyvae-compare-progress"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain(obj):
    """``obj`` as it reads back from JSON (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _entries(path: str):
    return [n for n in os.listdir(path) if not n.startswith(TMP_PREFIX)]


def staged_path(out: str) -> str:
    """Where ``compare --overwrite`` builds the comparison that replaces ``out``: the temp
    sibling ``.tmp-NAME-compare``, one per ``out``, so that a rerun finds it.

    Args:
        out: the comparison's directory.
    """
    parent, name = os.path.split(os.path.abspath(out))
    return os.path.join(parent, f"{TMP_PREFIX}{name}{STAGED_SUFFIX}")


def check_out(out: str, overwrite: bool, shared_decoder: Optional[str] = None,
              runs: Sequence[str] = ()) -> str:
    """What a comparison may do with ``out`` ("new", "continue" or "replace"), or a ConfigError
    saying why it may not write there; writes nothing.

    Args:
        out: the ``--out`` directory.
        overwrite: whether what ``out`` holds may be replaced; with a staged replacement
            (``staged_path``) there, even an empty or missing ``out`` is a "replace".
        shared_decoder: the ``--shared-decoder`` run, which ``out`` must not hold.
        runs: the runs compared, which ``out`` must not hold.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} exists and is not a directory")
    if shared_decoder is not None and _inside(shared_decoder, out):
        raise ConfigError(f"--out {out} holds the --shared-decoder run {shared_decoder}; "
                          "choose another --out")
    for run in runs:
        if _inside(run, out):
            raise ConfigError(f"--out {out} holds the run {run} that it compares; choose "
                              "another --out")
    if os.path.isdir(out) and is_run_dir(out):
        raise ConfigError(f"--out {out} is a training run (pyvae train); a comparison needs a "
                          "directory of its own")
    probe = os.path.abspath(out)  # the directory that must let us write: out, or its nearest ancestor
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"cannot create {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {out}: {probe} is not writable")
    if overwrite and (os.path.isdir(staged_path(out)) or os.path.isdir(out) and _entries(out)):
        return "replace"
    if not os.path.isdir(out) or not _entries(out):
        return "new"
    if os.path.isfile(os.path.join(out, REPORT)):
        raise ConfigError(f"{out} already holds a comparison, finished; pass --overwrite to "
                          "replace it")
    if os.path.isfile(os.path.join(out, PROGRESS)):
        return "continue"
    raise ConfigError(f"{out} is not empty and is not a pyvae comparison; choose another --out "
                      "or pass --overwrite to replace it")


def _good_row(family: str, row) -> bool:
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    return (isinstance(row, dict) and row.get("guide") == family
            and all(number(row.get(k)) for k in ("elbo", "log_px", "gap"))
            and isinstance(row.get("iwae"), dict) and all(number(v) for v in row["iwae"].values())
            and good_records(row.get("history") or []))


def _settings_difference(stored: dict, mine: dict) -> Optional[str]:
    """The first setting that differs, as the flag and both values, or None."""
    for name in sorted(set(stored) | set(mine)):
        if stored.get(name) != mine.get(name):
            if name == "data":
                return "other data (their sha256 differs)"
            if name == "shared_decoder_weights":
                return "another --shared-decoder model (its weights' sha256 differs)"
            return f"{_flag(name)} {stored.get(name)!r} there, {mine.get(name)!r} now"
    return None


def _empty(path: str) -> None:
    """Remove everything in the directory ``path`` (held locked), keeping the directory."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


class ComparisonDir:
    """The writer's handle on a comparison's directory; ``path`` is where its files go now
    (``out``, or with ``overwrite`` the staged replacement ``staged_path(out)``).

    Args:
        out: the ``--out`` directory.
        key: what the comparison is (settings, data and decoder fingerprints; JSON-able),
            stored in the progress file and compared when an unfinished comparison is continued.
        overwrite: whether what ``out`` holds may be replaced (all or nothing).
        shared_decoder: the ``--shared-decoder`` run, which ``out`` must not hold.
        runs: the run directories a comparison of trained runs reads, which ``out`` must not
            hold.
        log: called with one line when a staged replacement of other settings is discarded
            (``None`` for silence).
    """

    def __init__(self, out: str, key: dict, overwrite: bool = False,
                 shared_decoder: Optional[str] = None, runs: Sequence[str] = (), log=None):
        self.out, self.key, self.rows = out, _plain(key), {}
        self._fds, self.staging = [], None
        log = log or (lambda *_: None)
        mode = check_out(out, overwrite, shared_decoder, runs)
        try:
            os.makedirs(out, mode=dir_mode(), exist_ok=True)
            self._fds.append(lock(out))  # nobody else writes it (or its replacement) meanwhile
            if mode == "replace":
                self.staging = staged_path(out)
                if os.path.islink(self.staging) or os.path.lexists(self.staging) and \
                        not os.path.isdir(self.staging):
                    os.unlink(self.staging)  # not a staged comparison: a temp name's leftover
                try:
                    os.mkdir(self.staging, dir_mode())
                    fresh = True
                except FileExistsError:
                    fresh = False
                self._fds.append(lock(self.staging))  # a live writer's: "in use", untouched
                remove_stale_siblings(*os.path.split(os.path.abspath(out)))
                self.path = self.staging
                if not fresh:
                    rows, problem = self._read_progress(self.staging)
                    if problem is None:
                        remove_stale_temp_files(self.staging)
                        self.rows = rows
                    else:
                        log(f"{self.staging}: the staged replacement of {out} {problem[1]}; "
                            "discarded, starting over")
                        _empty(self.staging)
            else:
                remove_stale_temp_files(out)
                self.path = out
                if mode == "continue":
                    rows, problem = self._read_progress(out)
                    if problem is not None:
                        raise ConfigError(problem[2])
                    self.rows = rows
            self.continued = bool(self.rows)
            self._write_progress()
        except BaseException:
            self.close()
            raise

    def _read_progress(self, directory: str):
        """``(rows, None)``: the finished families' rows kept in ``directory``'s progress file,
        made with this comparison's settings; or ``(None, (kind, why, message))``: kind
        "damaged" or "settings", why as a phrase ("was made with --epochs 2 there, 3 now"), and
        the one-line error for a rerun in ``out``."""
        path = os.path.join(directory, PROGRESS)
        try:
            with open(path) as f:
                saved = json.load(f)
            if not isinstance(saved, dict) or saved.get("format") != FORMAT or \
                    not isinstance(saved.get("key"), dict) or not isinstance(saved.get("rows"), dict):
                raise ValueError("not a comparison's progress file")
        except (OSError, ValueError) as e:
            return None, ("damaged", f"is damaged ({e})",
                          f"{path} is damaged ({e}); pass --overwrite to start the comparison over")
        stored = saved["key"]
        difference = _settings_difference(stored.get("settings") or {}, self.key["settings"]) \
            or (None if stored.get("data") == self.key["data"] else "other data (their sha256 differs)") \
            or (None if stored.get("shared_decoder_weights") == self.key["shared_decoder_weights"]
                else "another --shared-decoder model (its weights' sha256 differs)")
        if difference:
            return None, ("settings", f"was made with {difference}",
                          f"{self.out} holds an unfinished comparison made with {difference}; "
                          "run it with its own settings to continue it, or pass --overwrite "
                          "to start over")
        families = self.key["settings"]["guides"]
        bad = [f for f, row in saved["rows"].items() if f not in families or not _good_row(f, row)]
        if bad:
            reason = f"the row of {bad[0]} is not a finished family's"
            return None, ("damaged", f"is damaged ({reason})", f"{path} is damaged ({reason}); "
                          "pass --overwrite to start the comparison over")
        return saved["rows"], None

    def _write_progress(self) -> None:
        write_json(os.path.join(self.path, PROGRESS),
                   {"format": FORMAT, "key": self.key, "rows": self.rows})

    def family_dir(self, family: str) -> str:
        return os.path.join(self.path, family)

    def finished(self, family: str) -> Optional[dict]:
        """The row of a family finished before (its run directory still there), or None."""
        row = self.rows.get(family)
        if row is None or not is_run_dir(self.family_dir(family)):
            return None
        row = dict(row)
        for name in ("iwae", "iwae_stderr"):  # JSON keys are strings; the k are ints
            row[name] = {int(k): v for k, v in (row.get(name) or {}).items()}
        return row

    def record(self, family: str, row: dict) -> None:
        """A finished family's row, kept so that a rerun need not redo it."""
        self.rows[family] = _plain(row)
        self._write_progress()

    def commit(self) -> None:
        """The report is written: the progress file goes, and a replacement takes ``out``'s
        place (what was there before is removed whole)."""
        os.unlink(os.path.join(self.path, PROGRESS))
        if self.staging is None:
            return
        replace_with(self.staging, self.out)
        self.staging, self.path = None, self.out

    def close(self) -> None:
        """Release the locks; an uncommitted replacement stays staged for a rerun to continue,
        and the old comparison stays as it was."""
        self.staging = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
