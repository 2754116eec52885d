"""`python -m durablectl`: the command line (the daemon starts itself this way)."""

from durablectl.cli import main

main()
