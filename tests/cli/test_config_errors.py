"""A user TOML that breaks the schema fails through the CLI with one line naming the file,
the table, the key and the allowed values — exit status 1, no traceback, no work done."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from vocalatent.cli import main

CASES = [
    # (TOML text, what the one line must contain)
    ("[segmnet]\nf_min = 300.0\n", ["[segmnet]", "did you mean [segment]?", "known tables:"]),
    ("[segment]\nf_mn = 300.0\n", ["[segment]", "'f_mn'", "did you mean 'f_min'?", "known keys:"]),
    ('[model]\nmax_epochs = "many"\n', ["[model] max_epochs", "must be an integer >= 1",
                                        '"many" (a string)']),
    ("[model]\nn_lattice = 1\n", ["[model] n_lattice", "from 2 to 65536", "or 0 (automatic"]),
    ("[spectrogram]\nn_freq = 0\n", ["[spectrogram]", "n_freq", "> 0"]),
    ("model = 3\n", ["[model]", "must be a table", "model = 3"]),
    ("[audio]\nchannel = \"left\"\n", ["[audio]", "channel", "\"all\""]),
]


@pytest.fixture()
def recordings(tmp_path):
    from vocalatent.audio.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "rec", n_files=1, n_syllables=4, sr=32000, random_state=0)
    return tmp_path / "rec"


@pytest.mark.parametrize("text,needles", CASES)
@pytest.mark.parametrize("command", ["embed", "segment"])
def test_bad_user_toml_is_one_line_through_the_cli(tmp_path, recordings, text, needles, command):
    user = tmp_path / "user.toml"
    user.write_text(text)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [command, str(recordings), "--config", str(user), "-o", str(out)])
    assert r.exit_code in (1, 2), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith(f"Error: {user}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not out.exists() or not any(out.iterdir())


def test_toml_latent_dim_7_is_refused_before_preprocessing(tmp_path, recordings):
    """Issue 14 item 5: the same limit from TOML as from --latent-dim, before any stage."""
    user = tmp_path / "user.toml"
    user.write_text("[model]\nlatent_dim = 7\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "vocalatent", "embed", str(recordings), "--config",
                        str(user), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"Error: {user}: [model] latent_dim must be an integer from 1 to 3; "
                     "got 7 (an integer)"]
    assert not (out / "syllables.h5").exists() and not (out / "model.pt").exists()
    flag = CliRunner().invoke(main, ["embed", str(recordings), "--latent-dim", "7", "-o", str(out)])
    assert flag.exit_code == 2 and "from 1 to 3; got 7" in flag.output
    assert not (out / "syllables.h5").exists()


def test_python_api_gets_the_same_limit(tmp_path, recordings):
    from vocalatent.config import ConfigError
    from vocalatent.workflow import embed

    with pytest.raises(ConfigError, match=r"\[model\] latent_dim must be an integer from 1 to 3"):
        embed(recordings, tmp_path / "out", overrides={"model": {"latent_dim": 7}})
    assert not (tmp_path / "out" / "syllables.h5").exists()
