"""`lattice` and `python -m lattice`. A Ctrl-C while the CLI still loads ends it as one
later does: exit 130, no traceback. (The console script points here, not at
`lattice.cli:main`, whose import is most of the start-up and would come first.)"""


def run() -> None:
    try:
        from lattice.cli import main
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
