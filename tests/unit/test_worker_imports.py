"""A worker loads only what its roles use: no audio libraries until a transcode, no sandbox server."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "soundfile", "lameenc", "tornado", "plaud.sandbox.server", "flower")


def loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(n for n in {HEAVY!r} if n in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={"PLAUD_SANDBOX_URL": "http://127.0.0.1:9/developer/api", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_worker_process_with_every_task_imported_loads_none_of_them():
    # What `celery -A workers worker` and `plaud-workers worker` import before the pool forks.
    imported = "import workers.cli\nfrom workers.celery_app import app\napp.loader.import_default_modules()"
    assert loaded_after(imported) == []


def test_the_audio_libraries_load_when_a_transcode_needs_them():
    assert loaded_after("import plaud.transcode as t\nt._with_lame\n") == []
    assert set(loaded_after("import plaud.transcode as t\ntry:\n    t._with_lame('/nonexistent', '/dev/null', 64)\n"
                            "except Exception:\n    pass\n")) >= {"numpy", "soundfile", "lameenc"}
