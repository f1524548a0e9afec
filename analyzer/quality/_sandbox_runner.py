"""Runs in a child interpreter (``python -I``) started by sandbox.py; stdlib only, never imported.

argv: solution.py tests.py entry-or-"" memory_mib cpu_s file_mib nproc (0 = no process limit)
Exit 0 = every assert passed; 3 = the solution failed to run; 4 = entry missing; 5 = a test failed.
The last stderr line says why.
"""
import sys
import traceback


def _limit() -> None:
    try:
        import resource  # POSIX only; on Windows the parent's timeout is the only limit
    except ImportError:
        return
    mem_b = int(sys.argv[4]) * 1024 * 1024
    cpu_s = int(sys.argv[5])
    file_b = int(sys.argv[6]) * 1024 * 1024
    nproc = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    limits = [("RLIMIT_AS", mem_b), ("RLIMIT_CPU", cpu_s), ("RLIMIT_FSIZE", file_b), ("RLIMIT_CORE", 0)]
    if nproc > 0:  # only inside the sandbox, where the count is the sandbox's own (its user namespace)
        limits.append(("RLIMIT_NPROC", nproc))
    for name, value in limits:
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError):
            pass  # e.g. RLIMIT_AS is not enforceable on macOS: the timeout still applies


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def main() -> int:
    _limit()
    solution_path, tests_path, entry = sys.argv[1], sys.argv[2], sys.argv[3]
    namespace = {"__name__": "solution"}
    try:
        exec(compile(_read(solution_path), "solution.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - the report is the product
        traceback.print_exc()
        print(f"solution failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    if entry and entry not in namespace:
        print(f"entry {entry!r} is not defined by the code", file=sys.stderr)
        return 4
    namespace["__name__"] = "__main__"
    tests = _read(tests_path)
    try:
        exec(compile(tests, "tests.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        # Name the failing test line: a bare `assert f(x) == y` has no message of its own.
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "tests.py"]
        where = ""
        if frames and frames[-1].lineno and 0 < frames[-1].lineno <= len(tests.splitlines()):
            where = f" at tests.py:{frames[-1].lineno} `{tests.splitlines()[frames[-1].lineno - 1].strip()}`"
        print(f"test failed{where}: {type(exc).__name__}: {exc}".rstrip(": "), file=sys.stderr)
        return 5
    return 0


if __name__ == "__main__":
    sys.exit(main())
