"""`python -m gossamer` runs the command line."""

from gossamer.cli.app import main

main()
