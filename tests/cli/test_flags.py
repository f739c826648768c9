"""The CLI's shared flags mean the same thing on every subcommand."""

from __future__ import annotations

import logging

import click
import pytest
from click.testing import CliRunner

from vocalatent._utils import logger
from vocalatent.cli import COMMAND_MODULES, main


def _commands(group=main, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def _opts(cmd):
    return {o: p for p in cmd.params for o in getattr(p, "opts", [])}


def test_registry_lists_every_area():
    assert COMMAND_MODULES == ["vocalatent.cli.job", "vocalatent.cli.audio", "vocalatent.cli.data",
                               "vocalatent.cli.batch", "vocalatent.cli.export"]
    names = {" ".join(n) for n, _ in _commands()}
    assert {"embed", "train", "project", "evaluate", "analyze", "plot", "pipelines", "config",
            "segment", "spectrograms", "data list", "data fetch", "batch", "export"} <= names


def test_same_flag_same_spelling_everywhere():
    for name, cmd in _commands():
        opts = _opts(cmd)
        # -v/-q after the subcommand, on every command
        assert "-v" in opts and "-q" in opts, name
        if "--pipeline" in opts:
            assert "-p" in opts and opts["-p"] is opts["--pipeline"], name
        if "--jobs" in opts:
            assert "-j" in opts and opts["-j"] is opts["--jobs"], name
        if "--device" in opts:
            # free text, not a closed choice
            assert not isinstance(opts["--device"].type, click.Choice), name
        assert "--workers" not in opts or opts["--workers"].hidden, name
    for name in ("embed", "train", "config", "segment", "spectrograms", "batch"):
        assert "-p" in _opts(main.commands[name]), name
    for name in ("embed", "train", "project", "segment", "spectrograms", "batch"):
        assert "-j" in _opts(main.commands[name]), name


@pytest.mark.parametrize("device,needle", [("tpu", "device must be"), ("cuda:7", "cuda")])
def test_bad_device_is_one_line_before_any_work(tmp_path, device, needle):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:  # pragma: no cover
        pytest.skip("this machine has a cuda:7")
    for args in (["embed", str(tmp_path)], ["train", str(tmp_path), "-o", str(tmp_path / "o")],
                 ["batch", str(tmp_path / "m.csv"), "-o", str(tmp_path / "o")]):
        (tmp_path / "m.csv").write_text("session,path\n")
        r = CliRunner().invoke(main, args + ["--device", device])
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "--device" in lines[0] and needle in lines[0], r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_verbosity_after_subcommand():
    old = logger.level
    try:
        r = CliRunner().invoke(main, ["pipelines", "-q"])
        assert r.exit_code == 0, r.output
        assert logger.level == logging.WARNING
        r = CliRunner().invoke(main, ["data", "list", "-vv"])
        assert r.exit_code == 0, r.output
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(old)


def test_workers_is_a_hidden_alias_of_jobs(tmp_path, monkeypatch):
    import vocalatent.cli.batch as batch_cli

    seen = {}

    def fake_run_batch(manifest, out, **kw):
        seen.update(kw)
        raise click.ClickException("stop")

    monkeypatch.setattr(batch_cli, "run_batch", fake_run_batch)
    m = tmp_path / "m.csv"
    m.write_text("session,path\n")
    for flag in ("-j", "--jobs", "-w", "--workers"):
        seen.clear()
        CliRunner().invoke(main, ["batch", str(m), "-o", str(tmp_path / "o"), flag, "3"])
        assert seen.get("workers") == 3, flag
    r = CliRunner().invoke(main, ["batch", str(m), "-o", str(tmp_path / "o"), "-j", "2", "-w", "3"])
    assert r.exit_code == 2 and "-j/--jobs" in r.output
    assert "--workers" not in CliRunner().invoke(main, ["batch", "--help"]).output


def test_project_is_also_predict_and_transform():
    from click.testing import CliRunner

    from vocalatent.cli import main

    listing = CliRunner().invoke(main, ["--help"]).output
    assert "(also: predict, transform)" in listing
    for alias in ("predict", "transform"):
        r = CliRunner().invoke(main, [alias, "--help"])
        assert r.exit_code == 0 and "project [OPTIONS] MODEL PATH" in r.output
