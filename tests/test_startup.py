"""What the commands do to start and end quickly, checked for what it must not cost: the
exit without the interpreter's teardown (`pipeline.cli.run`), and Keras imported without
scikit-learn, pandas and pyplot (`pipeline.backend`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import python


def _command(tmp_path: Path, body: str) -> Path:
    """A script whose `main` runs as a pipeline command (`pipeline.cli.run`)."""
    script = tmp_path / "command.py"
    script.write_text(
        textwrap.dedent(
            """
            import atexit, logging, sys
            from pipeline.cli import run

            def main():
                # An exit handler and a log file registered by the command's own work.
                atexit.register(lambda: open("handler-ran", "w").write("yes"))
                handler = logging.FileHandler("command.log")
                logging.getLogger("job").addHandler(handler)
                logging.getLogger("job").warning("the last line")
                print("printed last", end="")
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\nrun(main)\n"
    )
    return script


def test_a_finished_command_runs_exit_handlers_and_flushes_its_output(tmp_path: Path) -> None:
    script = _command(tmp_path, "")
    result = python(tmp_path, str(script))
    assert result.returncode == 0
    assert result.stdout == "printed last"  # flushed, though the interpreter was not torn down
    assert (tmp_path / "handler-ran").read_text() == "yes"
    assert (tmp_path / "command.log").read_text() == "the last line\n"


@pytest.mark.parametrize(("body", "status"), [("sys.exit(3)", 3), ("raise RuntimeError('x')", 1)])
def test_a_failed_command_keeps_its_exit_status(tmp_path: Path, body: str, status: int) -> None:
    result = python(tmp_path, str(_command(tmp_path, body)), check=False)
    assert result.returncode == status
    assert (tmp_path / "handler-ran").read_text() == "yes"
    assert (tmp_path / "command.log").read_text() == "the last line\n"


def test_keras_starts_without_its_optional_imports_which_stay_importable(tmp_path) -> None:
    code = """
        import sys
        from pipeline.backend import keras
        from pipeline.layers import Maxout
        loaded = {m for m in ("sklearn", "pandas", "matplotlib.pyplot") if m in sys.modules}
        assert not loaded, loaded
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), Maxout(2)])
        model.save("m.keras")
        assert keras.saving.load_model("m.keras", safe_mode=True).output_shape == (None, 3)
        import sklearn, pandas, matplotlib.pyplot
        print("ok")
    """
    assert python(tmp_path, "-c", textwrap.dedent(code)).stdout.strip() == "ok"
