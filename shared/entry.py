"""``genai-power COMMAND [ARGS...]``: one console command for every entry point (pyproject
[project.scripts]), so nobody needs ``make`` on Windows. Each command runs its module exactly as
``python -m MODULE ARGS...`` would (same flags, same exit codes); a module missing from this
installation is named with the fix instead of a traceback."""
from __future__ import annotations

import importlib.util
import runpy
import sys

# command -> module run as __main__ (a package runs its __main__.py)
COMMANDS = {
    "demo": "demo",
    "telemetry": "telemetry",
    "tail": "telemetry.tail",
    "record": "telemetry.record",
    "collect": "collector",
    "analyze": "analyzer",
    "compare": "analyzer.compare",
    "proxy": "collector.proxy",
    "quality": "analyzer.quality",
}
EXIT_USAGE = 2


def usage(commands: dict[str, str] = COMMANDS) -> str:
    width = max(map(len, commands))
    lines = [f"  genai-power {c:<{width}}  = python -m {m}" for c, m in commands.items()]
    return ("usage: genai-power COMMAND [ARGS...]   (genai-power COMMAND --help for its flags)\n\ncommands:\n"
            + "\n".join(lines))


def _runnable(module: str) -> bool:
    """Whether ``python -m module`` would find something to run, without running it."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is None:
            return False
        if spec.submodule_search_locations is not None:  # a package: needs its __main__
            return importlib.util.find_spec(module + ".__main__") is not None
        return True
    except (ImportError, ValueError):
        return False


def dispatch(argv: list[str], commands: dict[str, str] = COMMANDS) -> int:
    """Run ``argv[0]``'s module with ``argv[1:]``; the module's own exit code comes back."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(commands))
        return 0 if argv else EXIT_USAGE
    cmd, rest = argv[0], argv[1:]
    module = commands.get(cmd)
    if module is None:
        print(f"genai-power: unknown command {cmd!r}\n\n{usage(commands)}", file=sys.stderr)
        return EXIT_USAGE
    if not _runnable(module):
        print(f"genai-power {cmd}: the module {module} is not in this installation, so `python -m {module}` "
              "cannot run either. Fix: update the project (git pull) and reinstall it "
              "(pip install -e \".[quality,demo,dev]\").", file=sys.stderr)
        return EXIT_USAGE
    old_argv = sys.argv
    sys.argv = [f"genai-power {cmd}", *rest]  # argparse's prog: the help names the command typed
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # the modules end with sys.exit(main())
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = old_argv
    return 0


def main() -> int:
    return dispatch(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
