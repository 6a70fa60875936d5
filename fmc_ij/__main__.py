"""``python -m fmc_ij`` (and ``torchrun -m fmc_ij train ...``) runs the CLI."""

from fmc_ij.cli import main

if __name__ == "__main__":
    main()
