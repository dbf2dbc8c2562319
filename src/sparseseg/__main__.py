"""Allow ``python -m sparseseg`` (and ``torchrun -m sparseseg``)."""

from sparseseg.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
