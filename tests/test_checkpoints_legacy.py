"""Checkpoints written by an earlier version of the estimators load and score as they did.

The files in tests/fixtures/legacy_checkpoints were written by make_legacy_checkpoints.py there
with the code of commit 241fae1 (separate QLVM and VAE training loops, VAE subclassing QLVM).
"""

import json
from pathlib import Path

import numpy as np
import pytest

import vocalatent
from vocalatent.baselines import IWAE, VAE
from vocalatent.model import QLVM

HERE = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"
REF = json.loads((HERE / "reference.json").read_text())
CLASSES = {"QLVM": QLVM, "VAE": VAE, "IWAE": IWAE}


def _maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_legacy", HERE / "make_legacy_checkpoints.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _data(kind):
    return _maker().data(kind)


@pytest.mark.parametrize("name", sorted(REF["cases"]))
def test_legacy_checkpoint_loads_and_scores_the_same(name):
    case = REF["cases"][name]
    cls = CLASSES[case["estimator"]]
    model = cls.load(HERE / f"{name}.pt", device="cpu")
    assert type(model) is cls
    assert model.metadata_ == {"case": name}
    assert model.n_epochs_ == case["n_epochs"]
    X = _data(case["data"])
    got = model.score_samples(X, **REF["score_kwargs"])
    np.testing.assert_allclose(got, case["score_samples"], rtol=1e-5, atol=1e-4)
    kw = REF["score_kwargs"] if cls is QLVM else {}
    np.testing.assert_allclose(model.transform(X[:10], **kw), case["embedding"], rtol=1e-5, atol=1e-5)
    # the loaded model describes itself: get_params round-trips through the constructor
    params = model.get_params()
    assert cls(**params).get_params() == params


def test_legacy_checkpoint_refuses_the_wrong_class():
    with pytest.raises(vocalatent.DataError, match="VAE.load"):
        QLVM.load(HERE / "vae_2d_gaussian.pt")


@pytest.mark.parametrize("name", sorted(REF["cases"]))
def test_refit_with_the_shared_loop_reproduces_the_legacy_fit(name, tmp_path):
    """The same parameters and seed train the same model as the separate loops of 241fae1 did
    (same shuffles, shifts and samples, so the same weights up to float summation order)."""
    mk = _maker()
    cls, kw, kind = mk.CASES[name]
    X = mk.data(kind)
    model = cls(**kw, decoder="mlp", decoder_options={"hidden": [16, 16]}, max_epochs=3,
                batch_size=20, random_state=3, device="cpu", verbose=False)
    model.fit(X[:48], validation=X[48:])
    case = REF["cases"][name]
    assert model.n_epochs_ == case["n_epochs"]
    np.testing.assert_allclose(model.score_samples(X, **REF["score_kwargs"]), case["score_samples"],
                               rtol=1e-5, atol=1e-4)
