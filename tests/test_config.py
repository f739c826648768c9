"""Pipeline presets: loading, extends, merging, precedence, validation of every preset."""

import pytest

from vocalatent import ParameterError
from vocalatent.audio.segment import SegmentParams
from vocalatent.audio.spectrogram import SpectrogramParams
from vocalatent.config import deep_merge, list_pipelines, load_pipeline, resolve_config


def test_every_preset_is_valid_and_cites_a_source():
    names = {p["name"] for p in list_pipelines()}
    assert {"default", "zebra_finch", "bengalese_finch", "gerbil", "mouse_usv"} <= names
    for p in list_pipelines():
        cfg = load_pipeline(p["name"])
        assert p["source"] and p["description"]
        if p["domain"] == "vocal":
            SegmentParams.from_dict(cfg["segment"])
            SpectrogramParams.from_dict(cfg["spectrogram"])


def test_extends_and_deep_merge(tmp_path):
    zf = load_pipeline("zebra_finch")
    assert zf["segment"]["min_dur_s"] == 0.03          # own value
    assert zf["segment"]["window_s"] == 0.008          # inherited from default
    assert zf["pipeline"]["name"] == "zebra_finch"
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = deep_merge(base, {"a": {"y": [3]}, "c": 2})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2} and base["a"]["y"] == [1, 2]
    user = tmp_path / "u.toml"
    user.write_text('[pipeline]\nextends = "mouse_usv"\n[segment]\nth3 = 0.5\n'
                    '[model]\nlatent_dim = 2\n[neural]\nbin_s = 0.01\n')
    cfg = resolve_config(config_file=user, overrides={"segment": {"th3": None, "th2": 0.3}})
    assert cfg["segment"]["f_min"] == 30000.0 and cfg["segment"]["th3"] == 0.5
    assert cfg["segment"]["th2"] == 0.3
    # [model] training settings come from the default preset (the vocal jobs' measured
    # settings, pipelines/default.toml), latent_dim from the user file
    assert cfg["model"] == {"lr": 0.003, "schedule": "auto", "batch_size": 0, "patience": 10,
                            "max_epochs": 400, "latent_dim": 2}
    assert cfg["neural"] == {"bin_s": 0.01}
    cfg2 = resolve_config("gerbil", user, {"segment": {"th3": 0.6}})
    assert cfg2["segment"]["f_max"] == 62000.0 and cfg2["segment"]["th3"] == 0.6


def test_unknown_pipeline_lists_known_names(tmp_path):
    with pytest.raises(ParameterError, match="unknown pipeline 'canary'.*zebra_finch"):
        load_pipeline("canary")
    loop = tmp_path / "loop.toml"
    loop.write_text(f'[pipeline]\nextends = "{loop}"\n')
    with pytest.raises(ParameterError, match="cycle"):
        load_pipeline(loop)


# ------------------------------------------------------------------------------ the schema
import inspect  # noqa: E402

from vocalatent.config import ConfigError, TABLES, check_limit, defaults, table  # noqa: E402
from vocalatent.config.docs import markdown, template  # noqa: E402


@pytest.mark.parametrize("text,needle", [
    ("[segmnet]\nf_min = 300.0\n", r"unknown table \[segmnet\] \(did you mean \[segment\]\?\)"),
    ("[segment]\nf_mn = 300.0\n", r"\[segment\]: unknown key 'f_mn' \(did you mean 'f_min'\?\); known keys: mode"),
    ('[model]\nlatent_dim = "two"\n', r"\[model\] latent_dim must be an integer from 1 to 3; got \"two\""),
    ("[model]\nlatent_dim = 7\n", r"\[model\] latent_dim must be an integer from 1 to 3; got 7"),
    ("model = 3\n", r"\[model\]: must be a table"),
    ("[audio]\njobs = 0\n", r"\[audio\] jobs must be an integer >= 1, or -1; got 0"),
    ("[audio]\nchannel = -1\n", r"\[audio\] channel must be an integer >= 0, or \"all\""),
    ("[analysis]\nmin_persistence = 1.5\n", r"\[analysis\] min_persistence must be a number from 0.0 to 1.0"),
    ('[model]\nlikelihood = "gausian"\n', r"did you mean \"gaussian\""),
    ("[segment]\nf_min = 20000.0\n", r"\[segment\]: f_min must be < f_max"),
    ("[neural]\nbin_s = 0\n", r"\[neural\]: bin_s must be > 0"),
    ("[single_cell]\nmin_cells = 1.5\n", r"\[single_cell\] min_cells must be an integer"),
    ("segment = 3\n", r"\[segment\]: must be a table"),
    ("f_min = 3\n", r"unknown top-level key 'f_min'.*settings belong in tables"),
])
def test_user_toml_errors_name_file_table_key_and_allowed(tmp_path, text, needle):
    user = tmp_path / "user.toml"
    user.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        resolve_config(config_file=user)
    msg = str(info.value)
    assert msg.startswith(f"{user}: ") and "\n" not in msg


def test_presets_are_checked_too(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('[pipeline]\nextends = "default"\n[spectrogram]\nn_freqs = 64\n')
    with pytest.raises(ConfigError, match=r"mine.toml: \[spectrogram\]: unknown key 'n_freqs' "
                                          r"\(did you mean 'n_freq'\?\)"):
        load_pipeline(bad)


def test_overrides_from_python_are_checked_like_toml():
    with pytest.raises(ConfigError, match=r"overrides: \[model\] latent_dim must be an integer "
                                          r"from 1 to 3; got 7"):
        resolve_config(overrides={"model": {"latent_dim": 7}})
    assert check_limit("model", "latent_dim", 3) == 3
    with pytest.raises(ConfigError, match="from 1 to 3"):
        check_limit("model", "latent_dim", 4)


def test_ava_aliases_and_every_table_has_a_class():
    cfg = resolve_config(overrides={"segment": {"th_3": 0.4}})
    assert table(cfg, "segment") == SegmentParams.from_dict({**cfg["segment"]})
    for name in TABLES:
        obj = table({}, name)
        assert type(obj).__dataclass_params__.frozen, name
        assert set(defaults(name)) == {f for f in obj.__dataclass_fields__}


def test_one_default_per_setting():
    from vocalatent import lattice
    from vocalatent.model import QLVM

    sig = inspect.signature(QLVM.__init__).parameters
    d = defaults("model")
    for key in ("latent_dim", "likelihood", "decoder", "batch_size", "max_epochs", "lr",
                "patience", "n_harmonics", "n_restarts", "precision", "schedule"):
        assert d[key] == sig[key].default, key
    assert lattice.DEFAULT_N_TRAIN == {k: v[0] for k, v in lattice.AUTO_SIZES["cuda"].items()}
    assert lattice.DEFAULT_N_EVAL == {k: v[1] for k, v in lattice.AUTO_SIZES["cuda"].items()}
    assert lattice.auto_sizes(2, "cpu") == lattice.AUTO_SIZES["cpu"][2]
    assert table({}, "segment") == SegmentParams()
    assert table({}, "spectrogram") == SpectrogramParams()


def test_template_round_trips_every_preset(tmp_path):
    for p in list_pipelines():
        text = template(pipeline=p["name"])
        path = tmp_path / f"{p['name']}.toml"
        path.write_text(text)
        cfg = resolve_config(config_file=path)          # the template is itself valid
        preset = resolve_config(p["name"])
        for name, section in preset.items():
            if name == "pipeline":
                continue
            for key, value in section.items():
                assert cfg[name][key] == value, (p["name"], name, key)
        assert f'extends = "{p["name"]}"' in text


def test_docs_config_md_is_generated_from_the_schema():
    from pathlib import Path

    import vocalatent

    page = Path(vocalatent.__file__).resolve().parents[1] / "docs" / "config.md"
    if not page.is_file():  # pragma: no cover - installed copy
        pytest.skip("no docs/ here")
    assert markdown().strip() in page.read_text(), \
        "docs/config.md is stale: run python -m vocalatent.config.docs"
    assert "cpu 128/377/1021" in markdown() and "cuda 256/987/2039" in markdown()


def test_vocal_jobs_train_with_the_measured_settings():
    from vocalatent.workflow import make_model, resolve

    for name in ("default", "bengalese_finch", "zebra_finch", "mouse_usv"):
        model = make_model(resolve(pipeline=name), device="cpu", seed=0, verbose=False)
        assert (model.lr, model.schedule, model.batch_size, model.patience, model.max_epochs) == \
            (3e-3, "auto", "auto", 10, 400), name
    # the other domains keep QLVM's own defaults; batch_size 0 in any table means "auto"
    cells = resolve(pipeline="single_cell", overrides={"model": {"batch_size": 0}})
    model = make_model(cells, device="cpu", seed=0, verbose=False)
    assert model.batch_size == "auto" and model.schedule == "none" and model.lr == 1e-3
