"""``python -m plaud.sandbox`` is ``plaud-workers sandbox``."""

from .cli import sandbox

if __name__ == "__main__":
    sandbox(prog_name="python -m plaud.sandbox")
