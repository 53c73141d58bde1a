"""Where ``saeatlas report --out`` may put its page: refused, before the work, in another
output and in a folder that cannot hold a file; a link to a page is written through."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.mark.parametrize("outer", ["store", "sae", "sweep"])
@pytest.mark.parametrize("deeper", [False, True])
def test_a_page_inside_another_output_is_refused(
    tmp_path, outputs, run_cli, snapshot, forbid, outer, deeper
):
    """`report --out STORE/report.html` was written into the store, whose next
    `--overwrite` deleted it, while an atlas or a store there was refused."""
    import saeatlas.report.write as write

    cli, one_line = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    other = shutil.copytree(getattr(outputs, outer), tmp_path / outer)
    if outer == "sweep":  # the fixture's holds only sweep.json; a sweep writes both
        (other / "pareto.json").write_text("{}")
    before = snapshot(tmp_path)
    forbid(write, "load_report_data")
    folder = other / "pages" if deeper else other
    what = {"sae": "the SAE", "store": "the activation store"}.get(outer, f"the {outer}")
    where = "is inside" if deeper else "is"
    one_line(cli("report", atlas, "--out", folder / "r.html"), f"{where} {what} '{other}'")
    assert snapshot(tmp_path) == before


def test_a_page_in_its_own_atlas_or_beside_outputs_is_allowed(tmp_path, outputs):
    """The nested-outputs rule must not refuse a page in its own atlas (under its lock)
    or in a plain folder that holds other outputs."""
    from saeatlas.store.lock import OutputError, check_writable, output_lock

    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    shutil.copytree(outputs.store, tmp_path / "store")
    check_writable(tmp_path, for_file=True)
    with output_lock(atlas):
        check_writable(atlas / "pages", for_file=True)
    with pytest.raises(OutputError, match="is the atlas"):
        check_writable(atlas, for_file=True)  # another's atlas: not held
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas", "store"]


@pytest.mark.parametrize("target", ["proc", "link-through-file", "link-to-proc"])
def test_a_page_folder_that_cannot_hold_a_file_is_one_line_before_the_work(
    tmp_path, outputs, run_cli, forbid, target
):
    """`--out /proc/x/r.html` (or a link that leads there, or through a file) drew every
    figure and then failed with the OS error's words, which advised `--resume`, a flag
    report does not have."""
    import saeatlas.report.write as write

    cli, one_line = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "file" / "x", tmp_path / "link-through-file")
    os.symlink("/proc/x", tmp_path / "link-to-proc")
    folder = "/proc/x" if target == "proc" else tmp_path / target
    forbid(write, "load_report_data")
    line = one_line(cli("report", atlas, "--out", f"{folder}/r.html"), str(folder))
    assert "--resume" not in line and "Choose another" in line
    assert not (atlas / "figures").exists()


def test_a_link_to_a_page_is_written_through(tmp_path, analysed, run_cli):
    """`--out LINK` replaced the link with the page and left its target, an older page,
    as it was."""
    cli, _ = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    (tmp_path / "pages").mkdir()
    os.symlink(tmp_path / "pages" / "page.html", tmp_path / "link.html")
    r = cli("report", atlas, "--out", tmp_path / "link.html")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "link.html").is_symlink()
    assert b"saeatlas" in (tmp_path / "pages" / "page.html").read_bytes()[:1024]


@pytest.mark.parametrize("command", ["report", "export-neuronpedia"])
def test_a_full_disk_names_the_file_and_advises_no_resume(
    tmp_path, analysed, run_cli, monkeypatch, command
):
    """A full disk while the page or a batch was written ended in the wording of capture
    and train, 'continue with --resume', a flag neither command has."""
    import errno

    import saeatlas.export.neuronpedia as neuronpedia
    import saeatlas.report.write as write

    cli, one_line = run_cli
    module, name = (
        (write, "atomic_write_bytes") if command == "report" else (neuronpedia, "atomic_write_json")
    )

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(module, name, full)
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    out = tmp_path / ("r.html" if command == "report" else "np")
    extra = ["--n-examples", "2"] if command == "export-neuronpedia" else []
    line = one_line(cli(command, atlas, "--out", out, *extra), "No space left on device")
    assert "--resume" not in line and str(tmp_path) in line
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "train"])
def test_out_of_memory_advises_only_the_commands_own_flags(
    tmp_path, outputs, run_cli, monkeypatch, command
):
    """The report (and export-neuronpedia) advised lowering --batch-size, --shard-rows
    and --d-sae, flags they have not."""
    import saeatlas.report.write as write
    import saeatlas.train.run as run_module

    cli, one_line = run_cli

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9")

    if command == "report":
        monkeypatch.setattr(write, "load_report_data", no_memory)
        args = ["report", shutil.copytree(outputs.atlas, tmp_path / "atlas")]
    else:
        monkeypatch.setattr(run_module, "SparseAutoencoder", no_memory)
        args = ["train", "--acts", outputs.store, "--out", tmp_path / "sae"]
    line = one_line(cli(*args), "Out of memory", "use a machine with more memory")
    flags = [f for f in ("--batch-size", "--shard-rows", "--d-sae") if f in line]
    assert flags == ([] if command == "report" else ["--batch-size", "--d-sae"]), line


@pytest.mark.parametrize("length", [242, 300])
def test_a_page_name_too_long_for_its_temporary_file_is_refused_first(
    tmp_path, outputs, run_cli, forbid, length
):
    """A 242-byte page name fits the filesystem's 255 but its temporary file ('.tmp-NAME-'
    and 8 random characters) does not: every figure was drawn, then the page failed with
    'File name too long' naming the temporary file (a 300-byte one failed on os.stat, in
    the OS error's words)."""
    import saeatlas.report.write as write

    cli, one_line = run_cli
    atlas = shutil.copytree(outputs.atlas, tmp_path / "atlas")
    forbid(write, "load_report_data")
    page = tmp_path / ("n" * (length - 5) + ".html")
    one_line(cli("report", atlas, "--out", page), f"is {length} bytes long", "at most 241")


def test_a_page_given_as_a_folder_goes_inside_it(tmp_path, analysed, run_cli):
    # `report --out newdir/` wrote the page as a file named 'newdir' (the '/' dropped)
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    one_line(cli("report", atlas, "--out", ""), "names no file")  # an unset variable
    r = cli("report", atlas, "--out", f"{tmp_path / 'newdir'}{os.sep}")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "newdir" / "report.html").is_file()


def test_a_page_through_a_link_to_nothing_yet(tmp_path, analysed, run_cli):
    # a folder that is a link to a path not made yet: the page failed after every figure
    # was drawn, in the words "Cannot write or read 'dl': File exists"
    cli, one_line = run_cli
    atlas = shutil.copytree(analysed, tmp_path / "atlas")
    (tmp_path / "notes.txt").write_text("mine")
    os.symlink(tmp_path / "notes.txt" / "sub", tmp_path / "under_a_file")
    one_line(cli("report", atlas, "--out", tmp_path / "under_a_file" / "r.html"),
             "under_a_file", "Not a directory")  # fmt: skip
    assert not (atlas / "figures").exists()
    os.symlink(tmp_path / "missing", tmp_path / "dl")
    r = cli("report", atlas, "--out", tmp_path / "dl" / "r.html")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "missing" / "r.html").is_file() and (tmp_path / "dl").is_symlink()
