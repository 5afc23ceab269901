"""`python -m unipgen`: the `unipgen` command."""

from unipgen.cli import main

main()
