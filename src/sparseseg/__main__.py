"""Allow ``python -m sparseseg`` (and ``torchrun -m sparseseg``)."""

from sparseseg.cli.main import run

if __name__ == "__main__":
    run()
