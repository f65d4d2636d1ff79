"""The plan-table cache verifies every file before use: a damaged, edited or misplaced
file is logged once, rebuilt and replaced, and planning gives the cold run's latency;
a cache folder that cannot be written is one warning, and planning goes on without it."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from elkopt.chip import Chip
from elkopt.graph.ir import Dim, Operand, Operator, OpKind, Storage
from elkopt.graph.zoo import build_graph
from elkopt.pipeline import PlanningOptions, compile_model
from elkopt.plans import cache
from elkopt.plans import table as plan_table
from elkopt.plans.space import OpShape
from elkopt.plans.table import (
    TABLE_FORMAT, _ARRAYS, _layout_problem, build_table, build_tables, cached_table, table_key,
)

MODEL = ("tiny", "decode", 4, 64)
POD = Chip(name="pod", n_chips=4)
CONF = Path(__file__).resolve().parents[1] / "conf" / "chip"


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch):
    """Each test is a run of its own: folder warnings are issued once per run."""
    monkeypatch.setattr(cache, "_unusable_folders", set())
    monkeypatch.setattr(plan_table, "_left_corrupt", set())


def latency(cache_dir: Path | str | None) -> float:
    graph = build_graph(*MODEL)
    options = PlanningOptions(cache_dir=None if cache_dir is None else str(cache_dir))
    return compile_model(graph, POD, "static", options).timeline.latency_cycles


@pytest.fixture(scope="module")
def cold(tmp_path_factory) -> tuple[Path, float]:
    """(the cache folder a cold run filled, that run's latency in cycles)."""
    folder = tmp_path_factory.mktemp("cold") / "cache"
    return folder, latency(folder)


@pytest.fixture
def warm(cold, tmp_path) -> Path:
    """A copy of the cold run's cache folder."""
    folder = tmp_path / "cache"
    shutil.copytree(cold[0], folder)
    return folder


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npz"))


def fields(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def rewrite(path: Path, arrays: dict[str, np.ndarray], signed: bool) -> None:
    """Write `arrays` as the entry at `path`; signed: through the cache's own writer, with
    fresh checksums (as a buggy writer would), else with numpy and the checksum the file
    had (as an edit in place would)."""
    old = fields(path)
    key = str(old["key"])
    data = {name: arrays[name] for name in arrays if name not in cache.META_FIELDS}
    fmt = int(arrays.get("format", old["format"]))
    if signed:
        assert cache.write_entry(path, key, fmt, data) is None
    else:
        np.savez(path, **data, format=np.int64(fmt), key=old["key"], checksum=old["checksum"])


def edited(change, signed=False):
    """A corruption applying `change(arrays)` to every array of the entry."""
    def corrupt(path: Path, others: list[Path]) -> None:
        arrays = fields(path)
        change(arrays)
        rewrite(path, arrays, signed)
    return corrupt


def truncate(path, others):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes(path, others):
    """Flip the bytes of the first exec_cycles value (a change that would alter latencies)."""
    data = bytearray(path.read_bytes())
    at = bytes(data).index(fields(path)["exec_cycles"].tobytes())
    data[at:at + 8] = bytes(b ^ 0xFF for b in data[at:at + 8])
    path.write_bytes(bytes(data))


def make_directory(path, others):
    path.unlink()
    (path / "inside").mkdir(parents=True)
    (path / "inside" / "a_file").write_text("not a table")


def copy_from_next(path, others):
    """The file of the next key copied onto this one's name (the last gets the first's)."""
    source = others[(others.index(path) + 1) % len(others)]
    path.write_bytes(source.with_suffix(".orig").read_bytes())


def lone_npy(path, others):
    path.unlink()
    with open(path, "wb") as out:
        np.save(out, np.arange(10))


def fifo(path, others):
    path.unlink()
    os.mkfifo(path)


def halve_exec_cycles(arrays):
    arrays["exec_cycles"] = arrays["exec_cycles"] / 2


def drop_a_split_dim(arrays):
    arrays["spatial"] = arrays["spatial"][:, :-1]


def float32_cycles(arrays):
    arrays["exec_cycles"] = arrays["exec_cycles"].astype(np.float32)


def empty_all(arrays):
    for name in _ARRAYS:
        arrays[name] = arrays[name][:0]


def old_format(arrays):
    arrays["format"] = np.int64(TABLE_FORMAT - 1)


def negative_cycles(arrays):
    arrays["distribution_cycles"] = -arrays["distribution_cycles"] - 1


def front_past_the_end(arrays):
    arrays["front"] = arrays["front"] + len(arrays["cold_bytes"])


# name: (corruption applied to every file, how the reason in its warning starts)
CORRUPTIONS = {
    "truncated": (truncate, "unreadable: BadZipFile"),
    "zero_length": (lambda path, others: path.write_bytes(b""), "empty file"),
    "flipped_bytes": (flip_bytes, "unreadable: BadZipFile: Bad CRC-32 for file 'exec_cycles.npy'"),
    "wrong_shape": (edited(drop_a_split_dim), "checksum mismatch"),
    "wrong_shape_resigned": (edited(drop_a_split_dim, signed=True), "spatial has shape ("),
    "wrong_dtype": (edited(float32_cycles), "checksum mismatch"),
    "wrong_dtype_resigned": (edited(float32_cycles, signed=True),
                             "exec_cycles has dtype float32, expected float64"),
    "missing_array": (edited(lambda arrays: arrays.pop("front")), "missing array front"),
    "emptied_arrays": (edited(empty_all), "checksum mismatch"),
    "emptied_arrays_resigned": (edited(empty_all, signed=True), "no rows"),
    "directory": (make_directory, "a directory, not a file"),
    "exec_cycles_halved": (edited(halve_exec_cycles), "checksum mismatch"),
    "copied_from_another_key": (copy_from_next, "written for key '"),
    "old_format": (edited(old_format, signed=True), f"format {TABLE_FORMAT - 1}, expected {TABLE_FORMAT}"),
    "negative_cycles_resigned": (edited(negative_cycles, signed=True), "negative or non-finite cycles"),
    "front_out_of_range_resigned": (edited(front_past_the_end, signed=True),
                                    "front rows out of range or not increasing"),
    "lone_npy": (lone_npy, "not an .npz archive"),
    "fifo": (fifo, "not a regular file"),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_corrupt_entry_is_logged_rebuilt_and_replaced(name, warm, cold, caplog):
    corrupt, reason = CORRUPTIONS[name]
    files = entries(warm)
    assert len(files) > 10
    for path in files:  # originals kept aside, for the copy between keys
        shutil.copyfile(path, path.with_suffix(".orig"))
    for path in files:
        corrupt(path, files)

    with caplog.at_level(logging.WARNING, logger="elkopt"):
        rebuilt = latency(warm)
    assert rebuilt == cold[1]  # the cold run's latency to the last digit

    # one warning per file, naming it and what was wrong
    warned = Counter()
    for record in caplog.records:
        message = record.getMessage()
        assert record.levelno == logging.WARNING and message.startswith("plan table cache: "), message
        path = next(p for p in files if f" {p} " in message)
        warned[path] += 1
        assert message.startswith(f"plan table cache: {path} is corrupt ({reason}"), message
        assert message.endswith("); rebuilt"), message
        assert "\n" not in message
    assert warned == Counter(files)
    if name == "copied_from_another_key":
        path = files[0]
        message = next(r.getMessage() for r in caplog.records if f" {path} " in r.getMessage())
        assert f"written for key '{files[1].stem}', not {path.stem})" in message

    # every file was replaced by a valid entry: the next run reads them all, silently
    for path in files:
        assert path.is_file()
        assert cache.read_entry(path, path.stem, TABLE_FORMAT, _ARRAYS) is not None
    assert not list(warm.glob(".*.tmp"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        assert latency(warm) == cold[1]
    assert caplog.records == []


@pytest.mark.parametrize("stride", [5, pytest.param(1, marks=pytest.mark.slow)])
def test_every_single_byte_flip_is_caught(stride, warm):
    """Flip one byte of a file at a time (every `stride`-th byte): every flip fails
    verification, also those in zip bookkeeping that no zip reader checks (the whole-file
    digest catches them)."""
    path = entries(warm)[0]
    original, key = path.read_bytes(), path.stem
    assert cache.read_entry(path, key, TABLE_FORMAT, _ARRAYS) is not None
    reasons = Counter()
    for offset in range(0, len(original), stride):
        data = bytearray(original)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            cache.read_entry(path, key, TABLE_FORMAT, _ARRAYS)
        except cache.CorruptEntry as caught:
            reasons[str(caught).split(":")[0]] += 1
        else:
            pytest.fail(f"a flip of byte {offset} was not caught")
    assert reasons["unreadable"] > 0 and reasons["file digest mismatch"] > 0


def test_the_cold_run_matches_a_run_without_cache(cold):
    assert latency(None) == cold[1]


def test_a_warm_cache_is_read_without_warnings(warm, caplog):
    graph = build_graph(*MODEL)
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        tables = build_tables(graph, POD, 256, cache_dir=warm)
    assert tables.cache_hits == tables.unique_ops
    assert caplog.records == []


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_an_unwritable_cache_folder_warns_once_and_plans(where, tmp_path, cold, caplog):
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    folder = regular / "cache" if where == "under_a_file" else regular
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        assert latency(folder) == cold[1]
        assert latency(folder) == cold[1]  # a second plan in the same run: no new warning
    messages = [r.getMessage() for r in caplog.records]
    reason = "Not a directory" if where == "under_a_file" else "File exists"
    assert messages == [f"plan table cache: cannot use the folder {folder} ({reason}: {folder}); "
                        "planning continues without the cache"]
    assert regular.read_text() == "not a folder"


def test_a_corrupt_entry_in_a_read_only_folder_is_rebuilt_and_warned_once(warm, cold, monkeypatch, caplog):
    """A shared cache folder that cannot be written (simulated: these tests may run as
    root): corrupt files are rebuilt in memory, each warned about once per run."""
    files = entries(warm)
    for path in files:
        path.write_bytes(b"")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(warm))

    monkeypatch.setattr(cache.tempfile, "mkstemp", read_only)
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        assert latency(warm) == cold[1]
        assert latency(warm) == cold[1]  # the same run plans again: no new warnings
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (f"plan table cache: cannot use the folder {warm} (Permission denied: {warm}); "
                           "planning continues without the cache")
    assert sorted(messages[1:]) == sorted(
        f"plan table cache: {path} is corrupt (empty file); rebuilt but not replaced "
        "(the cache folder cannot be written)" for path in files)
    assert all(path.stat().st_size == 0 for path in files)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_cache_folder_under_proc_warns_once_and_plans(cold, caplog):
    folder = Path("/proc/elkopt-plan-cache-test")
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        assert latency(folder) == cold[1]
    [record] = caplog.records
    assert record.getMessage().startswith(f"plan table cache: cannot use the folder {folder} (")
    assert record.getMessage().endswith("); planning continues without the cache")


def test_an_entry_of_an_infeasible_operator_is_removed(tmp_path, caplog):
    """Empty tables are never cached, so any file under such a key is bad: it goes."""
    tiny_sram = Chip(name="tiny_sram", cores_per_chip=4, sram_bytes_per_core=4096)
    big = Operator("dot", "Dot", OpKind.MATMUL, (Dim("b", 8), Dim("n", 4096), Dim("k", 4096)),
                   Operand("y", ("b", "n"), Storage.CHIP),
                   (Operand("x", ("b", "k"), Storage.CHIP), Operand("w", ("k", "n"), Storage.HBM)),
                   reduce="sum")
    shape = OpShape.of(big)
    assert len(build_table(shape, tiny_sram, 2, 64)) == 0
    path = tmp_path / f"{table_key(shape, tiny_sram, 2, 64)}.npz"
    path.write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="elkopt"):
        table, hit = cached_table(shape, tiny_sram, 2, 64, tmp_path)
    assert (len(table), hit) == (0, False)
    assert not path.exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"plan table cache: {path} is corrupt (not an .npz archive); rebuilt"]


CHIPS = [POD, Chip(**yaml.safe_load((CONF / "mesh_pod4.yaml").read_text())),
         Chip(name="small", cores_per_chip=64, sram_bytes_per_core=64 * 1024)]


@pytest.mark.parametrize("chip", CHIPS, ids=lambda c: c.name)
def test_every_built_table_passes_the_layout_checks(chip):
    for model in (MODEL, ("tiny", "forward", 2, 64), ("dit_xl_2", "forward", 2, 256)):
        graph = build_graph(*model)
        for shape in {OpShape.of(op) for op in graph.ops}:
            table = build_table(shape, chip, graph.elem_bytes, 64)
            if len(table):
                assert _layout_problem(table.to_arrays(), shape, chip) is None, (model, shape)


def test_concurrent_writers_leave_valid_entries(tmp_path, caplog):
    """Threads building the same tables into one folder: every reader gets a whole file."""
    graph = build_graph(*MODEL)
    results, errors = [], []

    def build():
        try:
            results.append(build_tables(graph, POD, 64, cache_dir=tmp_path))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    with caplog.at_level(logging.WARNING, logger="elkopt"):
        threads = [threading.Thread(target=build) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        again = build_tables(graph, POD, 64, cache_dir=tmp_path)
    assert errors == [] and caplog.records == []
    assert again.cache_hits == again.unique_ops
    for tables in results:
        for a, b in zip(tables.tables, again.tables):
            assert np.array_equal(a.total_cycles, b.total_cycles) and np.array_equal(a.hot_bytes, b.hot_bytes)
    assert not list(tmp_path.glob(".*.tmp"))
