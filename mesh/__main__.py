"""`python -m mesh` is the `mesh` command."""

from mesh.cli import main

main()
