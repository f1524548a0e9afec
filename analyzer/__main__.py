import signal
import sys

EXIT_INTERRUPTED = 130
AGAIN = "analysis interrupted before it read anything; run it again with python -m analyzer --batch DIR"

if __name__ == "__main__":
    from shared.procs import ctrl_c_interrupts

    ctrl_c_interrupts()
    # A Ctrl-C while numpy/pyarrow load would surface as numpy's ImportError with two tracebacks (the
    # collector's closing analysis is often stopped right then): held until the imports are done.
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        from analyzer.cli import main
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        print(AGAIN, file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    try:
        code = main()
    except KeyboardInterrupt:  # main() handles its own; this is the instant between
        print(AGAIN, file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)
