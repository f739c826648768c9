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
    assert cfg["model"] == {"latent_dim": 2} and cfg["neural"] == {"bin_s": 0.01}
    cfg2 = resolve_config("gerbil", user, {"segment": {"th3": 0.6}})
    assert cfg2["segment"]["f_max"] == 62000.0 and cfg2["segment"]["th3"] == 0.6


def test_unknown_pipeline_lists_known_names(tmp_path):
    with pytest.raises(ParameterError, match="unknown pipeline 'canary'.*zebra_finch"):
        load_pipeline("canary")
    loop = tmp_path / "loop.toml"
    loop.write_text(f'[pipeline]\nextends = "{loop}"\n')
    with pytest.raises(ParameterError, match="cycle"):
        load_pipeline(loop)
