"""concept-eraser-gui entry point. The wizard is issue 5; until it lands this says so plainly."""

import sys


def main() -> int:
    print("The concept_eraser wizard is not built yet. Use the CLI meanwhile: concept-eraser --help "
          "(or 'make run' for the headless demo).", file=sys.stderr)
    return 2
