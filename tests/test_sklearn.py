"""The estimators follow scikit-learn's contract (its own estimator checks, Pipeline, GridSearchCV,
clone) and take scipy.sparse input, densified block by block, with the results of dense input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from vocalatent import IWAE, QLVM, VAE, ParameterError

# tiny models: the estimator checks fit each estimator a few dozen times
SMALL = dict(max_epochs=2, batch_size=64, decoder_options={"hidden": [8]}, n_eval_lattice=89,
             n_eval_shifts=1, device="cpu", verbose=False)
ESTIMATORS = [QLVM(n_lattice=34, **SMALL), VAE(encoder_hidden=(8,), **SMALL),
              IWAE(k=2, encoder_hidden=(8,), **SMALL)]

# Every check that applies to an unsupervised transformer runs and must pass; none is expected to
# fail. (check_array_api_input is skipped by scikit-learn itself unless SCIPY_ARRAY_API=1: the
# estimators compute in torch, not through the array API.) See docs/api.md.
EXPECTED_FAILED_CHECKS: dict = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _ring(n=240, D=12, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, n)
    X = np.stack([np.cos(2 * np.pi * (t + k / D)) for k in range(D)], 1)
    return (3 * X + 5 + 0.1 * rng.normal(size=X.shape)).astype(np.float32), t


def _qlvm(**kw):
    return QLVM(**{**SMALL, "n_lattice": 55, "random_state": 0, **kw})


@pytest.mark.parametrize("scaler", [StandardScaler, MinMaxScaler])
def test_pipeline_scaler_then_qlvm_gives_an_ndarray(scaler):
    X, _ = _ring()
    pipe = make_pipeline(scaler(), _qlvm())
    E = pipe.fit_transform(X)
    assert isinstance(E, np.ndarray) and E.shape == (len(X), 2) and E.dtype == np.float64
    assert np.all((E >= 0) & (E < 1))
    # the pipeline is the model on the scaled data, value for value
    direct = _qlvm().fit(scaler().fit_transform(X))
    np.testing.assert_array_equal(E, direct.transform(scaler().fit_transform(X)))
    assert np.isfinite(pipe.score(X))


def test_grid_search_over_n_lattice_picks_by_held_out_log_likelihood():
    X, _ = _ring(n=160)
    grid = GridSearchCV(_qlvm(max_epochs=3), {"n_lattice": [8, 89]}, cv=2)
    grid.fit(X)
    scores = grid.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    assert grid.best_params_["n_lattice"] == [8, 89][int(np.argmax(scores))]
    # the refit best model is the one the grid reports
    assert grid.best_estimator_.n_lattice == grid.best_params_["n_lattice"]
    assert grid.best_estimator_.n_lattice_ == grid.best_params_["n_lattice"]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_clone_round_trip_and_params(est):
    X, _ = _ring(n=64)
    fitted = clone(est).set_params(random_state=1).fit(X)
    c = clone(fitted)
    assert c.get_params(deep=True) == fitted.get_params(deep=True)
    assert not hasattr(c, "module_") and not hasattr(c, "history_")
    # get_params describes the object: the constructor rebuilds an identical estimator
    assert type(est)(**est.get_params()).get_params() == est.get_params()
    assert "n_restarts" in est.get_params()  # a real parameter of every estimator, not shadowed
    with pytest.raises(ParameterError, match="unknown parameter 'n_lattice_typo'"):
        clone(est).set_params(n_lattice_typo=3)


def test_y_is_never_taken_as_validation():
    X, _ = _ring(n=80)
    m = _qlvm(max_epochs=3).fit(X, X[:20])  # a Pipeline passes y positionally
    assert m.best_val_log_likelihood_ is None
    assert np.all(np.isnan(m.history_["val_log_likelihood"]))
    v = _qlvm(max_epochs=3).fit(X, validation=X[:20])
    assert np.all(np.isfinite(v.history_["val_log_likelihood"]))


def test_n_components_is_latent_dim():
    X, _ = _ring(n=64)
    m = _qlvm(n_components=1)
    assert m.latent_dim == 1 and m.get_params()["n_components"] == 1
    assert m.fit(X).transform(X).shape == (64, 1)
    m.set_params(n_components=3)
    assert m.latent_dim == 3
    m.set_params(latent_dim=2)
    assert m.n_components == 2
    m.latent_dim = 1  # an attribute set behind the alias's back is caught at fit
    with pytest.raises(ParameterError, match="n_components=2 and latent_dim=1 disagree"):
        m.fit(X)
    assert VAE(n_components=3).latent_dim == 3 and IWAE(n_components=1).latent_dim == 1
    assert QLVM().n_components is None and QLVM().latent_dim == 2


def test_set_output_pandas():
    X, _ = _ring(n=64)
    m = _qlvm().set_output(transform="pandas").fit(X)
    df = m.transform(X)
    assert list(df.columns) == ["qlvm0", "qlvm1"]
    np.testing.assert_array_equal(df.to_numpy(), _qlvm().fit(X).transform(X))


# ----------------------------------------------------------------------------- sparse input

def _counts(n=300, D=40, seed=0, fmt="csr"):
    C = sp.random(n, D, density=0.2, format=fmt, random_state=seed, dtype=np.float32)
    C.data = np.ceil(C.data * 5)
    return C


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("cls,kw", [(QLVM, {"n_lattice": 89}), (VAE, {"encoder_hidden": (16,)}),
                                    (IWAE, {"k": 3, "encoder_hidden": (16,)})],
                         ids=["QLVM", "VAE", "IWAE"])
def test_sparse_equals_dense_value_for_value(fmt, cls, kw):
    C = _counts(fmt=fmt)
    D = C.toarray()

    def make():
        return cls(likelihood="poisson", max_epochs=3, batch_size=64, random_state=0, device="cpu",
                   verbose=False, decoder_options={"hidden": [16]}, **kw)

    a = make().fit(C, validation=0.2)
    b = make().fit(D, validation=0.2)
    for key in a.history_:
        if key != "seconds":
            np.testing.assert_array_equal(a.history_[key], b.history_[key])
    np.testing.assert_array_equal(a.score_samples(C, n_lattice=233), b.score_samples(D, n_lattice=233))
    np.testing.assert_array_equal(a.transform(C), b.transform(D))
    assert a.score(C) == b.score(D)
    # and sparse validation data
    c = make().fit(C[:240], validation=C[240:])
    d = make().fit(D[:240], validation=D[240:])
    np.testing.assert_array_equal(c.history_[f"val_{c._metric}"], d.history_[f"val_{d._metric}"])


def test_sparse_input_is_never_densified_whole(monkeypatch):
    n, batch = 6000, 256
    C = _counts(n=n, D=30, seed=1)
    seen = []
    original = type(C).toarray

    def spy(self, *args, **kwargs):
        seen.append(self.shape[0])
        if self.shape[0] >= n:
            raise AssertionError("the whole sparse matrix was densified")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(C), "toarray", spy)
    m = QLVM(likelihood="poisson", n_lattice=34, max_epochs=1, batch_size=batch, memory_budget_mb=0.5,
             random_state=0, device="cpu", verbose=False, decoder_options={"hidden": [8]})
    m.fit(C, validation=0.1)
    ll = m.score_samples(C, n_lattice=89, n_shifts=1)
    emb = m.transform(C, n_lattice=89, n_shifts=1)
    assert ll.shape == (n,) and emb.shape == (n, 2) and np.all(np.isfinite(ll))
    # blocks: training batches, the 4,096-row setup sample, evaluation blocks bounded by the budget
    assert seen and max(seen) <= 4096
    assert seen.count(batch) >= (n - 600) // batch - 1


def test_sparse_bad_values_are_reported_per_block():
    C = _counts(n=200).tolil()
    C[150, 3] = -1.0  # not a count
    with pytest.raises(ValueError, match="X"):
        QLVM(likelihood="poisson", max_epochs=1, device="cpu", verbose=False,
             n_lattice=34, decoder_options={"hidden": [8]}).fit(C.tocsr())


# ----------------------------------------------------------------------------- devices

def test_mps_device_accepted_where_torch_offers_it(monkeypatch):
    import torch

    from vocalatent._utils import resolve_device

    if torch.backends.mps.is_available():  # pragma: no cover - Apple machines
        assert resolve_device("mps").type == "mps"
    else:
        with pytest.raises(ParameterError, match=r"device='mps' was requested but MPS is not available"):
            resolve_device("mps")
        X, _ = _ring(n=32)
        with pytest.raises(ParameterError, match="device='mps'"):
            _qlvm(device="mps").fit(X)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    with pytest.raises(ParameterError, match="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'tpu'"):
        resolve_device("tpu")
