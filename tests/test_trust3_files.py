"""The file paths that lost work or hung: reused pids, odd and multibyte names, folders that only
look like sessions, FIFOs, concurrent savers, what load lets through, float8 and huge manifests."""

import errno
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

import seqwidgets as sw
from seqwidgets import _io, session_io

FAST = dict(steps=1, positive_seq="0: a red circle")


def names(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.fixture(scope="module")
def three(tiny_pipe):
    """Three different sessions (by seed and length)."""
    made = []
    for seed in (1, 2, 3):
        session = sw.Session(tiny_pipe)
        params = sw.SequenceParams(**FAST, sequence_loop_count=1 + seed % 2, seed=seed)
        session.run(params, name=f"version {seed}")
        made.append(session)
    return made


def fingerprint(session: sw.Session) -> tuple:
    """Everything a save keeps of a session: the tree, names and every latent's bytes."""
    return tuple(
        (
            b.id,
            b.name,
            b.fork,
            tuple(b.frames[i].latent.float().numpy().tobytes() for i in b.own_indices),
        )
        for b in session.branches
    )


def killed_between_renames(path: Path, pid: int) -> Path:
    """What a folder save killed between its two renames leaves: the previous session moved
    aside under ``pid``'s temporary name, the new one not yet renamed in."""
    old = path.parent / f".{path.name}.{pid}-{secrets.token_hex(4)}.old"
    os.rename(path, old)
    half = path.parent / f".{path.name}.{pid}-{secrets.token_hex(4)}.tmp"
    half.mkdir()
    (half / "manifest.json").write_bytes(b"{half")
    return old


@pytest.fixture
def live_pid():
    """The id of a process that runs for the whole test (a reused pid: not the writer's)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield child.pid
    child.kill()
    child.wait()


# -- 1. a reused pid ---------------------------------------------------------------------------


@pytest.mark.parametrize("whose", ["this process", "another process"])
def test_a_folder_moved_aside_under_a_reused_pid_is_recovered_and_never_lost(
    three, tiny_pipe, tmp_path, live_pid, whose
):
    previous, other, _ = three
    pid = os.getpid() if whose == "this process" else live_pid
    path = previous.save(tmp_path / "s")
    killed_between_renames(path, pid)

    loaded = sw.Session.load(path, tiny_pipe)  # recovered although the pid runs
    assert fingerprint(loaded) == fingerprint(previous)

    killed_between_renames(path, pid)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        other.save(path)  # the previous session is back under the name: not replaced
    other.export(other.branches[0], tmp_path / "a.gif")  # cleans orphans in the folder
    assert fingerprint(sw.Session.load(path, tiny_pipe)) == fingerprint(previous)
    assert names(tmp_path) == ["a.gif", "s"]  # the killed save's half folder is gone


# -- 2. odd names ------------------------------------------------------------------------------

odd_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=30
).filter(lambda name: name not in (".", ".."))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=odd_names | st.sampled_from(["a\nb", "line\n", "\n", "x.\n.old", "s.1-0123abcd.old"]))
def test_any_name_is_recovered_and_its_temporaries_cleaned(tmp_path, name):
    folder = tmp_path / "work"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = _io.replace_folder(folder / name, {"manifest.json": b"previous"})
    killed_between_renames(path, 2**22 + 7)  # above pid_max: never a running process
    orphan = folder / f".{name}.{2**22 + 7}-00000000.tmp.gif"
    orphan.write_bytes(b"half")

    assert _io.recover_folder(path) is True
    assert (path / "manifest.json").read_bytes() == b"previous"
    _io.remove_orphans(folder)
    assert names(folder) == [name]


# -- 3. a folder that only looks like a session ------------------------------------------------


def test_overwrite_refuses_a_folder_that_merely_has_a_sessions_names(three, tmp_path):
    previous, other, _ = three
    real = previous.save(tmp_path / "real")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(real / "manifest.json", project / "manifest.json")  # a real session's manifest
    (project / "latents.safetensors").mkdir()  # ... beside a folder of the user's files
    (project / "latents.safetensors" / "thesis.txt").write_text("a user's work")

    with pytest.raises(FileExistsError, match=r"latents\.safetensors.*not a session"):
        other.save(project, overwrite=True)
    assert (project / "latents.safetensors" / "thesis.txt").read_text() == "a user's work"

    (project / "latents.safetensors" / "thesis.txt").unlink()
    (project / "latents.safetensors").rmdir()
    (project / "latents.safetensors").write_bytes(b"a user's notes, not safetensors")
    with pytest.raises(FileExistsError, match="not a session"):
        other.save(project, overwrite=True)
    assert (project / "latents.safetensors").read_bytes() == b"a user's notes, not safetensors"
    other.save(real, overwrite=True)  # a real session folder is still replaced


# -- 4. FIFOs ----------------------------------------------------------------------------------


_WATCHDOG = """
import os, sys, time
fifo, marker = sys.argv[1:]
time.sleep(10)
open(marker, "w").close()
for _ in range(50):  # release a blocked reader and a blocked writer, again and again
    for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
        try:
            os.close(os.open(fifo, flags))
        except OSError:
            pass
    time.sleep(0.1)
"""


def finishes(call, fifo: Path):
    """``call()``'s exception (or None), failing the test if it blocked on ``fifo``: after 10 s a
    watchdog process opens the FIFO's other end (a call blocked in C may hold the GIL, so no
    thread of this process could) and leaves a marker."""
    marker = fifo.parent / f"blocked-{secrets.token_hex(4)}"
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(fifo), str(marker)])
    try:
        call()
        error = None
    except Exception as raised:  # noqa: BLE001 - reported to the test
        error = raised
    finally:
        watchdog.kill()
        watchdog.wait()
    if marker.exists():
        marker.unlink()
        pytest.fail(f"blocked on the FIFO {fifo.name} until a watchdog opened its other end")
    return error


@pytest.mark.parametrize("name", ["s.safetensors", "s"])
def test_saving_onto_or_loading_from_a_fifo_refuses_at_once(three, tiny_pipe, tmp_path, name):
    session = three[0]
    fifo = tmp_path / name
    os.mkfifo(fifo)
    error = finishes(lambda: sw.Session.load(fifo, tiny_pipe), fifo)
    assert isinstance(error, ValueError) and "FIFO" in str(error), error
    assert len(str(error).splitlines()) == 1
    for overwrite in (True, False):
        error = finishes(lambda overwrite=overwrite: session.save(fifo, overwrite=overwrite), fifo)
        assert isinstance(error, ValueError) and "FIFO" in str(error), error
    assert names(tmp_path) == [name]


def test_a_session_folder_holding_a_fifo_refuses_at_once(three, tiny_pipe, tmp_path):
    path = three[0].save(tmp_path / "s")
    for part in ("manifest.json", "latents.safetensors"):
        saved = (path / part).read_bytes()
        (path / part).unlink()
        os.mkfifo(path / part)
        error = finishes(lambda: sw.Session.load(path, tiny_pipe), path / part)
        assert isinstance(error, ValueError) and "FIFO" in str(error) and part in str(error)
        error = finishes(lambda: three[1].save(path, overwrite=True), path / part)
        assert isinstance(error, FileExistsError) and part in str(error), error
        (path / part).unlink()
        (path / part).write_bytes(saved)


def test_from_comfy_and_exports_refuse_a_fifo_at_once(three, tmp_path):
    fifo = tmp_path / "workflow.json"
    os.mkfifo(fifo)
    error = finishes(lambda: sw.SequenceParams.from_comfy(fifo), fifo)
    assert isinstance(error, ValueError) and "FIFO" in str(error), error
    gif = tmp_path / "out.gif"
    os.mkfifo(gif)
    session = three[0]
    error = finishes(lambda: session.export(session.branches[0], gif, overwrite=True), gif)
    assert isinstance(error, ValueError) and "FIFO" in str(error), error


# -- 5. several processes saving one path ------------------------------------------------------


def _saver(session: sw.Session, path: Path, until: float, report) -> None:
    saves = 0
    while time.monotonic() < until:
        session.save(path, overwrite=True)
        saves += 1
    report.write(f"saves {saves}\n")


def _loader(pipe, path: Path, until: float, versions: dict, report) -> None:
    seen = {}
    while time.monotonic() < until:
        loaded = sw.Session.load(path, pipe)
        version = versions.get(fingerprint(loaded), "a mix")
        seen[version] = seen.get(version, 0) + 1
    report.write(f"loads {json.dumps(seen)}\n")


def in_child(work, report_path: Path) -> int:
    """Run ``work(report)`` in a forked process; an exception is written to the report."""
    pid = os.fork()
    if pid == 0:
        try:
            with open(report_path, "w") as report:
                try:
                    work(report)
                except BaseException as error:  # noqa: BLE001 - reported to the test
                    report.write(f"error {type(error).__name__}: {error}\n")
        finally:
            os._exit(0)
    return pid


@pytest.mark.slow
@pytest.mark.parametrize("name", ["s.safetensors", "s"])
def test_concurrent_savers_and_a_loader_see_only_whole_sessions(three, tiny_pipe, tmp_path, name):
    path = tmp_path / name
    three[0].save(path)
    versions = {fingerprint(session): f"version {n}" for n, session in enumerate(three)}
    until = time.monotonic() + 3.0
    children = [
        in_child(lambda r, s=s: _saver(s, path, until, r), tmp_path / f"saver{n}.txt")
        for n, s in enumerate(three)
    ]
    children.append(
        in_child(lambda r: _loader(tiny_pipe, path, until, versions, r), tmp_path / "loader.txt")
    )
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    reports = [(tmp_path / f"saver{n}.txt").read_text() for n in range(3)]
    reports.append((tmp_path / "loader.txt").read_text())
    errors = [
        line for report in reports for line in report.splitlines() if line.startswith("error")
    ]
    assert errors == []
    assert sum(int(report.split()[1]) for report in reports[:3]) > 0
    loads = json.loads(reports[3].split(" ", 1)[1])
    assert "a mix" not in loads and sum(loads.values()) > 0
    # The last complete save won, whole, and nothing else is left beside it.
    final = sw.Session.load(path, tiny_pipe)
    assert fingerprint(final) in versions
    assert [n for n in names(tmp_path) if not n.endswith(".txt")] == [name]


# -- 6. multibyte names ------------------------------------------------------------------------


def test_names_of_valid_byte_length_with_many_multibyte_characters(three, tiny_pipe, tmp_path):
    session = three[0]
    for name in ("霧" * 80 + ".safetensors", "霧" * 85):  # 252 and 255 bytes
        assert len(name.encode()) <= 255
        path = session.save(tmp_path / name)
        assert fingerprint(sw.Session.load(path, tiny_pipe)) == fingerprint(session)
        session.save(path, overwrite=True)
    gif = tmp_path / ("霧" * 83 + ".gif")  # 253 bytes
    session.export(session.branches[0], gif)
    session.export(session.branches[0], gif, overwrite=True)
    assert gif.read_bytes()[:6] == b"GIF89a"
    assert len(names(tmp_path)) == 3


# -- 7. what load lets through, save can write back --------------------------------------------


def rewrite_manifest(path: Path, **changes) -> None:
    """Change manifest fields of a saved ``.safetensors`` session, keeping its checksum valid."""
    manifest = session_io.read_manifest(path)
    manifest.update(changes)
    tensors = session_io._read_files(path)[1]
    text = session_io.seal({k: v for k, v in manifest.items() if k != "checksum"}, tensors)
    path.write_bytes(st_save(tensors, metadata={session_io.METADATA_KEY: text}))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    next_id=st.sampled_from([-5, -1, 0, 1, 2**62 - 1, 2**62 + 1, 2**64, 10**30])
    | st.integers(-(2**70), 2**70)
)
def test_a_session_that_loads_saves_a_file_that_loads_back(tiny_pipe, tmp_path, next_id):
    path = tmp_path / "empty.safetensors"
    sw.Session(tiny_pipe).save(path, overwrite=True)  # no branch: next_id alone sets the id
    rewrite_manifest(path, next_id=next_id)
    try:
        session = sw.Session.load(path, tiny_pipe)
    except ValueError as error:
        assert "next_id" in str(error)
        return
    try:
        session.run(sw.SequenceParams(**FAST, sequence_loop_count=1, denoise_seq=0.0))
    except ValueError as error:  # the last id was taken: refused before any branch exists
        assert "every branch id" in str(error) and session.branches == []
        return
    again = session.save(tmp_path / "again.safetensors", overwrite=True)
    assert [b.id for b in sw.Session.load(again, tiny_pipe).branches] == [
        b.id for b in session.branches
    ]


# -- 8. float8 latents and a manifest too big for one file -------------------------------------


def test_float8_latents_are_saved_as_float32_and_load_back_exactly(tiny_pipe, tmp_path):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST, sequence_loop_count=2))
    for index, frame in root.frames.items():
        root.frames[index] = type(frame)(
            **{**vars(frame), "latent": frame.latent.to(torch.float8_e4m3fn)}
        )
    for name in ("s.safetensors", "s"):
        loaded = sw.Session.load(session.save(tmp_path / name), tiny_pipe)
        for index, frame in loaded.branches[0].frames.items():
            assert torch.equal(frame.latent, root.frames[index].latent.float())


def test_a_float8_tensor_in_a_file_is_refused_in_one_line(tiny_pipe, tmp_path):
    session = sw.Session(tiny_pipe)
    session.run(sw.SequenceParams(**FAST, sequence_loop_count=1))
    manifest, tensors = session_io.snapshot(session.branches, 2, session.sampler)
    tensors = {
        k: v.to(torch.float8_e4m3fn) if k.startswith("latent") else v for k, v in tensors.items()
    }
    path = tmp_path / "f8.safetensors"
    text = session_io.seal(manifest, tensors)
    path.write_bytes(st_save(tensors, metadata={session_io.METADATA_KEY: text}))
    with pytest.raises(ValueError, match="float8_e4m3fn") as caught:
        sw.Session.load(path, tiny_pipe)
    assert len(str(caught.value).splitlines()) == 1


LIMIT = 100_000_000  # safetensors' header limit, in bytes


@pytest.mark.slow
def test_a_manifest_over_the_file_header_limit_suggests_the_folder_form(tiny_pipe, tmp_path):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(**FAST, sequence_loop_count=1, denoise_seq=0.0))
    root.name = "n" * (LIMIT + 1)
    path = tmp_path / "big.safetensors"
    with pytest.raises(ValueError, match=r"over the 100 MB .*save it as a folder") as caught:
        session.save(path)
    assert len(str(caught.value).splitlines()) == 1
    assert names(tmp_path) == []
    folder = session.save(tmp_path / "big")
    assert len(sw.Session.load(folder, tiny_pipe).branches[0].name) == LIMIT + 1


# -- the lock itself ---------------------------------------------------------------------------


def test_a_save_waits_for_a_running_one_and_a_killed_one_frees_the_name(three, tiny_pipe, tmp_path):
    """A process holding the lock (mid-save) makes other saves wait, not fail; kill -9 frees it."""
    path = three[0].save(tmp_path / "s")
    script = (
        "import sys, time\nfrom seqwidgets import _io\n"
        "with _io.target_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(sw.__file__).parents[1]))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout.readline().strip() == b"locked"
        done = threading.Event()
        thread = threading.Thread(
            target=lambda: (three[1].save(path, overwrite=True), done.set()), daemon=True
        )
        thread.start()
        assert not done.wait(1.0)  # waiting for the other save
        child.send_signal(signal.SIGKILL)
        assert done.wait(30)
    finally:
        child.kill()
        child.wait()
    assert fingerprint(sw.Session.load(path, tiny_pipe)) == fingerprint(three[1])
    assert names(tmp_path) == ["s"]


def test_where_flock_is_missing_saves_work_and_keep_a_running_writers_files(
    three, tiny_pipe, tmp_path, monkeypatch, live_pid
):
    """Some network mounts refuse flock (ENOLCK): saves still work, and liveness falls back
    to process ids, which may keep a leftover longer but never removes a running writer's."""

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_io.fcntl, "flock", no_flock)
    running = tmp_path / f".a.gif.{live_pid}-00000000.tmp.gif"
    running.write_bytes(b"in progress")
    dead = tmp_path / f".b.gif.{2**22 + 7}-00000000.tmp.gif"
    dead.write_bytes(b"left by a killed export")
    path = three[0].save(tmp_path / "s")
    killed_between_renames(path, 2**22 + 7)
    assert fingerprint(sw.Session.load(path, tiny_pipe)) == fingerprint(three[0])
    three[1].save(path, overwrite=True)
    assert names(tmp_path) == [running.name, "s"]


def test_a_session_at_the_last_branch_id_refuses_a_new_branch_and_still_saves(tiny_pipe, tmp_path):
    from seqwidgets.session_io import MAX_BRANCH_ID

    path = tmp_path / "full.safetensors"
    sw.Session(tiny_pipe).save(path)
    rewrite_manifest(path, next_id=MAX_BRANCH_ID)
    session = sw.Session.load(path, tiny_pipe)
    with pytest.raises(ValueError, match="every branch id"):
        session.run(sw.SequenceParams(**FAST, sequence_loop_count=1))
    assert session.branches == []
    sw.Session.load(session.save(tmp_path / "again.safetensors"), tiny_pipe)
