import sys

EXIT_INTERRUPTED = 130

if __name__ == "__main__":
    # the imports too: a Ctrl-C while numpy/pyarrow load (the collector's closing analysis) is one line
    try:
        from analyzer.cli import main

        code = main()
    except KeyboardInterrupt:
        print("analysis interrupted before it wrote anything; run it again with python -m analyzer --batch DIR",
              file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)
