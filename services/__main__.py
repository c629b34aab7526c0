"""``python -m services`` is the ``fraudstream`` command."""

from services.cli import main

main()
