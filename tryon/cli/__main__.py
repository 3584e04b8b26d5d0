"""``python -m tryon.cli`` (and ``accelerate launch -m tryon.cli train ...``)."""

from tryon.cli import main

if __name__ == "__main__":
    main()
