"""`python -m unipgen.cli`: the `unipgen` command."""

from unipgen.cli import main

main()
