"""The vocal lab-notebook example runs (reduced size) on the real recordings, so it cannot rot."""

import importlib.util

from vocalatent._utils import REPO_ROOT


def test_vocal_notebook_example_runs(tmp_path, real_data):
    real_data("bengalese_finch_pykanto")
    real_data("zebra_finch_song")
    spec = importlib.util.spec_from_file_location("vocal_notebook", REPO_ROOT / "examples" / "vocal_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ds = module.main(["--quick", "--out", str(tmp_path), "--device", "cpu"])
    birds = set(str(s).split("/")[0] for s in ds["source"].values)
    assert birds == {"bengalese_finch_pykanto", "zebra_finch_song"}
    for name in ("map_by_bird_and_cluster.png", "density_and_boundaries.png", "latent_map.png"):
        assert (tmp_path / "notebook" / name).stat().st_size > 5000
