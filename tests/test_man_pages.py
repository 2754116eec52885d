"""The man pages in ``man/`` are generated from the command tree (``make man``) and checked in;
this fails when regenerating them would change them (SPEC §6, STYLE habit 11)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from durablectl.cli.app import app
from durablectl.cli.manpages import escape, main, render_pages

MAN = Path(__file__).resolve().parent.parent / "man"


def test_the_checked_in_man_pages_are_up_to_date() -> None:
    pages = render_pages()
    on_disk = {p.name for p in MAN.glob("durablectl*.1")}
    assert on_disk == set(pages), "run `make man` and commit man/"
    for name, text in pages.items():
        assert (MAN / name).read_text(encoding="utf-8") == text, \
            f"man/{name} is stale: run `make man`"


def test_there_is_a_page_for_the_program_and_one_per_group() -> None:
    root = typer.main.get_command(app)
    groups = [name for name, cmd in root.commands.items() if hasattr(cmd, "commands")]
    assert set(render_pages()) == {"durablectl.1", *(f"durablectl-{g}.1" for g in groups)}
    assert {"daemon", "config"} <= set(groups)


def test_every_visible_command_and_option_is_documented() -> None:
    pages = render_pages()
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        page = pages[f"durablectl-{name}.1"] if hasattr(cmd, "commands") else pages["durablectl.1"]
        subcommands = cmd.commands.items() if hasattr(cmd, "commands") else [(None, cmd)]
        for sub_name, sub in subcommands:
            path = " ".join(p for p in ("durablectl", name, sub_name) if p)
            assert f'.SS "{escape(path)} ' in page, path
            for param in sub.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith("-") and not getattr(param, "hidden", False):
                        assert f"\\fB{escape(opt)}\\fR" in page, (path, opt)
    assert "ready\\-fd" not in pages["durablectl-daemon.1"]  # hidden options stay hidden


def test_the_pages_are_deterministic_and_escaped() -> None:
    first, second = render_pages(), render_pages()
    assert first == second
    for text in first.values():
        assert ".TH " in text and ".SH NAME" in text and '.SH "EXIT STATUS"' in text
        body = [line for line in text.splitlines() if not line.startswith(".")]
        assert all(not line.startswith("'") for line in body)
    assert escape("--db") == "\\-\\-db"
    assert escape(".hidden\n'quote") == "\\&.hidden\n\\&'quote"
    assert escape("a\\b") == "a\\eb"


def test_the_generator_writes_checks_and_removes_stale_pages(tmp_path: Path) -> None:
    (tmp_path / "durablectl-gone.1").write_text("old")
    assert main([str(tmp_path), "--check"]) == 1
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(render_pages())
    assert main([str(tmp_path), "--check"]) == 0
    assert main([]) == 2


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_renders_the_pages_without_warnings() -> None:
    for page in sorted(MAN.glob("durablectl*.1")):
        done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stderr == "", (page.name, done.stderr)


def test_make_man_runs_the_generator() -> None:
    makefile = (MAN.parent / "Makefile").read_text()
    assert "$(BIN)/python -m durablectl.cli.manpages man/" in makefile
    done = subprocess.run([sys.executable, "-m", "durablectl.cli.manpages", str(MAN), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
