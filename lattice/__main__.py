"""`python -m lattice`. A Ctrl-C while the CLI still loads ends it as one later does:
exit 130, no traceback."""

try:
    from lattice.cli import main
except KeyboardInterrupt:
    raise SystemExit(130) from None

main()
