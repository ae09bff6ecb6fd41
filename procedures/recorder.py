"""The run file: one HDF5 file per run in the layout of DESIGN.md, written as the run goes.

Root attributes `hotspin_version`, `procedure`, `started`, `status`; group `parameters`; station
snapshots `snapshot/start` and `snapshot/end`; `spectra/frequency` (Hz) and `spectra/psd`
(rad²/Hz, one row per step); `results/<name>` columns, one entry per step, each with `units`;
optional `traces/<name>` and `truth`. Every step is flushed to disk, so a crash keeps it.

Continuous records, `records/<name>` (`ContinuousRecord`): one int16 dataset of ADC codes per
channel (attribute `volts_per_code`), chunked and resizable, 2 bytes per sample and channel;
group attributes `sample_rate_Hz`, `decimation`, `first_index` (the index of the first sample,
counted from the start of the acquisition) and `first_time_s` (its clock time); a gap table
`gaps/first_index`, `gaps/length` (missing samples) and `gaps/position` (how many samples were
stored before the gap). Stored samples are the received ones, in order: sample k of a channel
has index first_index + k + the lengths of the gaps whose position ≤ k.

A file that holds a continuous record is opened `live`: in the newest HDF5 format, and in
single-writer/multiple-reader (SWMR) mode while the record grows, so another process reads it
with ``h5py.File(path, "r", libver="latest", swmr=True)`` and `refresh()` on the datasets. A
record is flushed at least every second; a killed run keeps every flushed sample, readable with
``swmr=True`` (`open_run_file`). SWMR forbids new objects and attributes, so a record's
datasets are made before it starts (`RunFile.start_swmr`) and the file is reopened normally for
the end of the run (`RunFile.end_swmr`); a kill outside that window leaves the newest format's
"open for writing" mark, which ``h5clear -s`` removes.

A full disk ends a run as `failed` ("disk full at PATH") with the file readable up to its last
flush. HDF5 must never meet the full disk itself: after one failed flush, closing the file or
flushing again can crash the process (SIGBUS, or a segfault after "Unable to flush cache (slist
already enabled?)"). So a run keeps `DISK_RESERVE_BYTES` of its own beside the file (a ballast
file, `<run file>.reserve`, deleted when the run file closes), every flush first checks that
the disk still has that much free, and on a full disk the ballast is deleted before the file is
closed, so the final status and the close always find room; a flush that fails anyway (another
program filled the disk in between) is never repeated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import h5py
import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.procedures import __version__

STATUSES = ("running", "completed", "aborted", "failed")
RECORD_CHUNK_SAMPLES = 1 << 16  # 128 kB per chunk and channel
GAP_CHUNK_ROWS = 256
FLUSH_INTERVAL_S = 1.0
#: Room a run keeps for its last writes (the final status, the end snapshot), in bytes.
DISK_RESERVE_BYTES = 1 << 20


class DiskFullError(OSError):
    """The disk a run file is on is full (or too full to keep the run's reserve)."""

    def __init__(self, path: Path, free_bytes: int | None = None) -> None:
        detail = "" if free_bytes is None else f" ({free_bytes / 1e6:.3g} MB free)"
        super().__init__(errno.ENOSPC, f"disk full at {path}{detail}")
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(directory: str | Path) -> int:
    """Return the free bytes, for an unprivileged writer, of the disk holding ``directory``."""
    return shutil.disk_usage(directory).free


def check_free_space(path: str | Path, needed_bytes: int, what: str) -> None:
    """Refuse (ParameterError) a file of about ``needed_bytes`` (plus a run's reserve) that the
    disk holding ``path``'s directory has no room for, naming both figures."""
    directory = Path(path).absolute().parent
    while not directory.exists():  # the run file's folders are made when it is opened
        directory = directory.parent
    free = free_bytes(directory)
    needed = int(needed_bytes) + DISK_RESERVE_BYTES
    if free < needed:
        raise ParameterError(
            f"{what} needs about {needed / 1e6:.4g} MB at {directory}, but only "
            f"{free / 1e6:.4g} MB are free there"
        )


def _is_disk_full(error: BaseException) -> bool:
    """Return whether an HDF5 or OS error is a write refused for lack of space (ENOSPC)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "errno = 28" in str(error) or "No space left on device" in str(error)


class RunAborted(Exception):  # noqa: N818 (it is not an error: the operator stopped the run)
    """The operator stopped the run (abort button, stop request)."""


def default_path(name: str, directory: str | Path = "data") -> Path:
    """Return data/<date>/<time>_<name>.h5 under ``directory``."""
    now = dt.datetime.now()
    return Path(directory) / now.strftime("%Y-%m-%d") / f"{now.strftime('%H%M%S')}_{name}.h5"


def _attribute_value(value: Any) -> Any:
    """Return ``value`` in a form HDF5 attributes accept (None becomes the string 'None')."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array(value, dtype=h5py.string_dtype())
    return value


def write_attributes(group: h5py.Group, values: Mapping[str, Any]) -> None:
    """Write a (nested) mapping as attributes; nested mappings become subgroups."""
    for key, value in values.items():
        if isinstance(value, Mapping):
            write_attributes(group.require_group(str(key)), value)
        else:
            group.attrs[str(key)] = _attribute_value(value)


def now_iso() -> str:
    """Return the present local time as an ISO 8601 string with its UTC offset."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


Method = TypeVar("Method", bound=Callable[..., Any])


def _disk_guarded(method: Method) -> Method:
    """Make a full disk met inside a write of the run file a `DiskFullError` (reserve freed)."""

    @functools.wraps(method)
    def guarded(self: RunFile, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DiskFullError:
            raise
        except (OSError, RuntimeError) as error:
            if not _is_disk_full(error):
                raise
            self._disk_is_full()
            raise DiskFullError(self.path) from error

    return guarded  # type: ignore[return-value]


class RunFile:
    """An HDF5 run file, open for writing while the run lasts."""

    def __init__(
        self,
        path: str | Path,
        procedure: str,
        parameters: Mapping[str, Any],
        live: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; a run never overwrites another run's data")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        self._disk_full = False
        try:
            with open(self._reserve, "wb") as ballast:
                ballast.write(bytes(DISK_RESERVE_BYTES))
        except OSError as error:
            self._release_reserve()
            if _is_disk_full(error):
                raise DiskFullError(self.path, free_bytes(self.path.parent)) from None
            raise
        # The default (oldest) file format on purpose: the newest superblock marks a file as
        # "open for writing" and a crash leaves that mark, so nobody could read the steps it kept.
        # A live file (continuous records, SWMR) needs the newest: SWMR mode lifts the mark.
        self.live = live
        try:
            self.file = h5py.File(self.path, "w", libver="latest" if live else None)
        except BaseException:
            self._release_reserve()
            raise
        attrs = self.file.attrs
        attrs["hotspin_version"] = __version__
        attrs["procedure"] = procedure
        attrs["started"] = now_iso()
        attrs["status"] = "running"
        write_attributes(self.file.create_group("parameters"), parameters)
        self._steps = 0
        self._checkpointed_at: float | None = None
        try:
            self.flush()
        except DiskFullError:
            self.file.attrs["error"] = f"disk full at {self.path}"
            self.close("failed")
            raise

    # --- context manager: a run that raises is marked, never left 'running' -------------------
    def __enter__(self) -> RunFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.file.id.valid:
            self._release_reserve()
            return
        if exc_type is None:
            status = "completed"
        elif self._disk_full or (exc is not None and _is_disk_full(exc)):
            status = "failed"
            self.file.attrs["error"] = f"disk full at {self.path}"
        elif issubclass(exc_type, KeyboardInterrupt | RunAborted):
            status = "aborted"
            self.file.attrs["abort_reason"] = str(exc) or "interrupted (Ctrl-C)"
        else:
            status = "failed"
            self.file.attrs["error"] = f"{exc_type.__name__}: {exc}"
        self.close(status)

    @property
    def status(self) -> str:
        """Return the run's status attribute."""
        return str(self.file.attrs["status"])

    def flush(self) -> None:
        """Push everything written so far to disk; a full disk raises DiskFullError."""
        if self._disk_full:
            raise DiskFullError(self.path)
        free = free_bytes(self.path.parent)
        if free < DISK_RESERVE_BYTES:
            self._disk_is_full()
            raise DiskFullError(self.path, free)
        self._flush()

    @_disk_guarded
    def _flush(self) -> None:
        self.file.flush()

    def start_swmr(self) -> None:
        """Enter SWMR mode: from now on only appends, which readers in other processes see."""
        if not self.live:
            raise RuntimeError(f"{self.path} was not opened live: SWMR needs the newest format")
        self.file.swmr_mode = True

    def end_swmr(self) -> None:
        """Leave SWMR mode (close and reopen the file) so that objects can be added again."""
        if self.file.swmr_mode:
            self.file.close()
            # Without file locking: an SWMR reader may still hold the file (the monitor, say);
            # it reads what was flushed, and reopens the file for what the run adds at its end.
            self.file = h5py.File(self.path, "r+", libver="latest", locking=False)

    def create_record(
        self,
        name: str,
        volts_per_code: Mapping[str, float],
        sample_rate_Hz: float,
        decimation: int,
        first_time_s: float,
        first_index: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> ContinuousRecord:
        """Create `records/<name>` with one code dataset per channel (before `start_swmr`);
        ``clock`` (the station's) times its flushes."""
        return ContinuousRecord(
            self.file, name, volts_per_code, sample_rate_Hz, decimation, first_time_s, first_index,
            clock=clock,
            file_flush=self.flush,  # the run file's: free space checked, a full disk handled
        )  # fmt: skip

    def _disk_is_full(self) -> None:
        """Stop flushing and give the reserve back, so that the close finds room."""
        self._disk_full = True
        self._release_reserve()

    def _release_reserve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._reserve)

    def close(self, status: str) -> None:
        """Set the final status, stamp the end time and close the file."""
        if status not in STATUSES:
            raise ValueError(f"status = {status!r} is not one of {STATUSES}")
        self._release_reserve()
        try:
            self.end_swmr()
            self.file.attrs["status"] = status
            self.file.attrs["finished"] = now_iso()
        finally:
            self.file.close()

    # --- content ---------------------------------------------------------------------------------
    @_disk_guarded
    def write_snapshot(self, which: str, snapshot: Mapping[str, Any]) -> None:
        """Store the station snapshot taken at the 'start' or 'end' of the run."""
        if which not in ("start", "end"):
            raise ValueError(f"snapshot must be 'start' or 'end', got {which!r}")
        write_attributes(self.file.require_group(f"snapshot/{which}"), snapshot)
        self.flush()

    @_disk_guarded
    def write_truth(self, attributes: Mapping[str, Any]) -> None:
        """Store the simulation truth (parameters and derived values) in group `truth`."""
        write_attributes(self.file.require_group("truth"), attributes)
        self.flush()

    @_disk_guarded
    def append_event(self, time_s: float, kind: str, message: str) -> None:
        """Append a watchdog or fault event to the `events` table (time, kind, message)."""
        events = self.file.require_group("events")
        text = h5py.string_dtype()
        if "time_s" not in events:
            events.create_dataset("time_s", shape=(0,), maxshape=(None,), dtype=float,
                                  chunks=(64,)).attrs["units"] = "s"  # fmt: skip
            events.create_dataset("kind", shape=(0,), maxshape=(None,), dtype=text, chunks=(64,))
            events.create_dataset("message", shape=(0,), maxshape=(None,), dtype=text,
                                  chunks=(64,))  # fmt: skip
        for name, value in (("time_s", time_s), ("kind", kind), ("message", message)):
            column = events[name]
            column.resize(column.shape[0] + 1, axis=0)
            column[-1] = value
        self.flush()

    @_disk_guarded
    def write_summary(self, summary: Mapping[str, tuple[float, float, str]]) -> None:
        """Store the run's outcome in group `summary`: per name its value, uncertainty, units."""
        group = self.file.require_group("summary")
        for name, (value, uncertainty, units) in summary.items():
            group.attrs[name] = value
            group.attrs[f"{name}_uncertainty"] = uncertainty
            group.attrs[f"{name}_units"] = units
        self.flush()

    @_disk_guarded
    def write_dataset(self, path: str, data: np.ndarray, units: str, **attrs: Any) -> None:
        """Store a whole dataset with its units."""
        dataset = self.file.create_dataset(path, data=data)
        dataset.attrs["units"] = units
        write_attributes(dataset, attrs)
        self.flush()

    @_disk_guarded
    def create_trace(
        self, name: str, length: int, dtype: np.dtype | type, units: str, sample_rate_Hz: float
    ) -> h5py.Dataset:
        """Create `traces/<name>` of a known length, to be filled block by block."""
        chunk = int(min(length, 1 << 18))
        dataset = self.file.create_dataset(
            f"traces/{name}", shape=(length,), dtype=dtype, chunks=(max(chunk, 1),)
        )
        dataset.attrs["units"] = units
        dataset.attrs["sample_rate_Hz"] = sample_rate_Hz
        return dataset

    @_disk_guarded
    def append_spectrum(
        self,
        frequency_Hz: np.ndarray,
        psd_rad2_per_Hz: np.ndarray,
        standard_error: np.ndarray | None = None,
        attributes: Mapping[str, Any] | None = None,
        model: np.ndarray | None = None,
    ) -> None:
        """Append one row to `spectra/psd` (and to `spectra/psd_standard_error` and
        `spectra/model`, the fitted model's expectation, NaN outside the fit, if given).

        The frequency axis, and ``attributes`` of the estimate (window, segments, …), are
        written with the first row; every row of a run shares them.
        """
        frequency_Hz = np.asarray(frequency_Hz, dtype=float)
        psd = np.asarray(psd_rad2_per_Hz, dtype=float)
        if frequency_Hz.shape != psd.shape:
            raise ValueError(
                f"spectrum has {psd.size} PSD bins for {frequency_Hz.size} frequencies"
            )
        spectra = self.file.require_group("spectra")
        columns = {"psd": psd}
        if standard_error is not None:
            columns["psd_standard_error"] = np.asarray(standard_error, dtype=float)
        if model is not None:
            columns["model"] = np.asarray(model, dtype=float)
        if "psd" not in spectra:
            spectra.create_dataset("frequency", data=frequency_Hz).attrs["units"] = "Hz"
            for name in columns:
                rows = spectra.create_dataset(
                    name, shape=(0, psd.size), maxshape=(None, psd.size), dtype=float,
                    chunks=(1, psd.size),
                )  # fmt: skip
                rows.attrs["units"] = "rad^2/Hz"
            write_attributes(spectra["psd"], attributes or {})
        if not np.array_equal(spectra["frequency"][...], frequency_Hz):
            raise ValueError("every spectrum of a run must share one frequency axis")
        if "running_spectrum" in self.file:  # the step's running average is now the step itself
            del self.file["running_spectrum"]
        self._checkpointed_at = None
        for name, values in columns.items():
            rows = spectra[name]
            rows.resize(rows.shape[0] + 1, axis=0)
            rows[-1] = values
        self.flush()

    @_disk_guarded
    def checkpoint_average(
        self,
        frequency_Hz: np.ndarray,
        psd_rad2_per_Hz: np.ndarray,
        records: int,
        segments: int,
    ) -> None:
        """Keep the running average of the spectrum in progress in `running_spectrum` and flush
        it (`checkpoint_due` says when): a killed run keeps every average finished by the last
        flush. `append_spectrum` removes it when the step is recorded.
        """
        # Apart from `spectra`, which holds finished steps only (readers count on its rows).
        running = self.file.require_group("running_spectrum")
        for name, values, units in (
            ("frequency", frequency_Hz, "Hz"), ("psd", psd_rad2_per_Hz, "rad^2/Hz"),
        ):  # fmt: skip
            values = np.asarray(values, dtype=float)
            if name in running and running[name].shape != values.shape:
                del running[name]
            if name not in running:
                running.create_dataset(name, data=values).attrs["units"] = units
            else:
                running[name][...] = values
        running.attrs["records"] = int(records)
        running.attrs["segments"] = int(segments)
        self.flush()
        self._checkpointed_at = time.monotonic()

    def checkpoint_due(self, interval_s: float = FLUSH_INTERVAL_S) -> bool:
        """Return whether the running average was last written ``interval_s`` ago or more.

        Wall-clock time on purpose: what a kill can lose is measured in real seconds.
        """
        last = self._checkpointed_at
        return last is None or time.monotonic() - last >= interval_s

    @_disk_guarded
    def append_results(self, row: Mapping[str, tuple[float, str]]) -> None:
        """Append one step's scalar results, {name: (value, units)}, to the `results` table."""
        table = self.file.require_group("results")
        for name, (value, units) in row.items():
            if name not in table:
                column = table.create_dataset(
                    name,
                    shape=(self._steps,),
                    maxshape=(None,),
                    dtype=float,
                    chunks=(64,),
                    fillvalue=math.nan,
                )
                column.attrs["units"] = units
            column = table[name]
            column.resize(self._steps + 1, axis=0)
            column[self._steps] = value
        for name in table:
            if table[name].shape[0] < self._steps + 1:
                table[name].resize(self._steps + 1, axis=0)
        self._steps += 1
        self.flush()


class ContinuousRecord:
    """A continuous record of ADC codes in a run file, appended block by block as it arrives."""

    def __init__(
        self,
        file: h5py.File,
        name: str,
        volts_per_code: Mapping[str, float],
        sample_rate_Hz: float,
        decimation: int,
        first_time_s: float,
        first_index: int = 0,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        file_flush: Callable[[], None] | None = None,
    ) -> None:
        if not volts_per_code:
            raise ValueError("a continuous record needs at least one channel")
        self.file = file
        group = file.create_group(f"records/{name}")
        group.attrs["sample_rate_Hz"] = float(sample_rate_Hz)
        group.attrs["decimation"] = int(decimation)
        group.attrs["first_index"] = int(first_index)
        group.attrs["first_time_s"] = float(first_time_s)
        group.attrs["first_time_s_units"] = "s"
        group.attrs["channels"] = np.array(list(volts_per_code), dtype=h5py.string_dtype())
        self.channels = []
        for channel, scale in volts_per_code.items():
            codes = group.create_dataset(
                channel, shape=(0,), maxshape=(None,), dtype=np.int16,
                chunks=(RECORD_CHUNK_SAMPLES,),
            )  # fmt: skip
            codes.attrs["units"] = "ADC code"
            codes.attrs["volts_per_code"] = float(scale)
            self.channels.append(codes)
        gaps = group.create_group("gaps")
        self.gap_columns = []
        for column, units in (("first_index", "samples"), ("length", "samples"),
                              ("position", "stored samples")):  # fmt: skip
            table = gaps.create_dataset(
                column, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(GAP_CHUNK_ROWS,)
            )
            table.attrs["units"] = units
            self.gap_columns.append(table)
        self.next_index = int(first_index)  # the index the next block must start at
        self.stored = 0  # samples per channel stored so far
        self.missing = 0  # samples per channel lost in gaps
        self.gap_count = 0  # rows of the gap table
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._file_flush = file_flush or file.flush
        self._flushed_at = clock()

    def append(self, first_index: int, codes: np.ndarray) -> None:
        """Store a block (channels × samples, int16) that starts at index ``first_index``."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != len(self.channels) or codes.dtype != np.int16:
            raise ValueError(
                f"block of shape {codes.shape} and type {codes.dtype}: expected "
                f"({len(self.channels)}, n) int16 ADC codes"
            )
        if first_index != self.next_index:
            raise ValueError(
                f"block starts at sample {first_index}, the record at {self.next_index}: "
                "record the gap first (add_gap)"
            )
        n = codes.shape[1]
        for dataset, values in zip(self.channels, codes, strict=True):
            dataset.resize((self.stored + n,))
            dataset[self.stored :] = values
        self.stored += n
        self.next_index += n
        self._flush_if_due()

    def add_gap(self, first_index: int, length: int) -> None:
        """Note ``length`` missing samples from index ``first_index`` in the gap table."""
        if first_index != self.next_index or length < 1:
            raise ValueError(
                f"gap of {length} from sample {first_index}: gaps start at the record's next "
                f"sample, {self.next_index}, and are at least one sample long"
            )
        rows = self.gap_count
        for column, value in zip(self.gap_columns, (first_index, length, self.stored), strict=True):
            column.resize((rows + 1,))
            column[rows] = value
        self.next_index += length
        self.missing += length
        self.gap_count += 1
        self._flush_if_due()

    def flush(self) -> None:
        """Push the record to disk; SWMR readers see it from now on."""
        for dataset in (*self.channels, *self.gap_columns):
            dataset.flush()
        self._file_flush()
        self._flushed_at = self._clock()

    def _flush_if_due(self) -> None:
        if self._clock() - self._flushed_at >= self._flush_interval_s:
            self.flush()


def open_run_file(path: str | Path) -> h5py.File:
    """Open a run file for reading: normally, or as an SWMR reader (a live or killed record)."""
    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", libver="latest", swmr=True)


def record_volts(record: h5py.Group, channel: str) -> np.ndarray:
    """Return a continuous record's stored samples of ``channel`` in volts (gaps left out)."""
    codes = record[channel]
    return codes[...].astype(float) * float(codes.attrs["volts_per_code"])
