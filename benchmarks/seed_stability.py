"""Do two seeds agree? ARI between the clusters of two runs of ``vocalatent embed`` on one session.

Items are matched by source file and onset. Each run's embedding is clustered again by the old
defaults, the density rule (peak test), the density rule with the decoder merge of session 6
(its model and ``syllables.h5``) and the current defaults (the 128² grid), beside the job's own
``cluster`` (its own grid); and, for the maps themselves, the share
of each syllable's 10 nearest neighbours (torus distance) that are its neighbours in both
maps (chance: 10 / N), and the table of the job's clusters of one seed against the other
(docs/analysis.md, "Two seeds")::

    python -m vocalatent embed DATA -o OUT_s0 --seed 0 --no-figures
    python -m vocalatent embed DATA -o OUT_s1 --seed 1 --no-figures
    python benchmarks/seed_stability.py OUT_s0 OUT_s1
"""
import sys, numpy as np, pandas as pd
from sklearn.metrics import adjusted_rand_score as ari
import vocalatent.accessor  # noqa
from vocalatent import QLVM
from vocalatent.embedding import read_embedding
from vocalatent.data.store import SyllableStore
from vocalatent.analysis.density import select_bandwidth
from vocalatent.analysis.clusters import find_clusters
runs = sys.argv[1:]
res = {}
for out in runs:
    ds = read_embedding(f"{out}/embedding.nc")
    z = ds["embedding"].values
    key = pd.Series([f"{s}@{o:.4f}" for s, o in zip(ds["source"].values, ds["onset_s"].values)])
    m = QLVM.load(f"{out}/model.pt", device="cpu")
    store = SyllableStore(f"{out}/syllables.h5")
    segs = store.segments.reset_index(drop=True)
    skey = [f"{s}@{o:.4f}" for s, o in zip(segs["source"], segs["onset_s"])]
    X = np.asarray(store.spectrograms[np.arange(len(segs))])
    pos = {k: i for i, k in enumerate(skey)}
    X = X[[pos[k] for k in key]]
    bw = select_bandwidth(z)
    labs = {
        "old": find_clusters(z, method="persistence", bandwidth=2 * bw, min_persistence=0.5, min_relative_height=0.1).labels,
        "dip": find_clusters(z, bandwidth=bw, excess_mass=False).labels,
        # the default of session 6: the peak test and the merge below index 6
        "dip+merge": find_clusters(z, bandwidth=bw, decoder=m.mean_function(), data=X,
                                   excess_mass=False, continuum_separation=6.0).labels,
        # the default since session 7: peak or mass test, the merge with the continuum test
        "default": find_clusters(z, bandwidth=bw, decoder=m.mean_function(), data=X).labels,
        "job": ds["cluster"].values,
    }
    res[out] = (key, labs, z)
    print(out, "items", len(z), "clusters", {k: int(v.max()) + 1 for k, v in labs.items()})
(k0, l0, z0), (k1, l1, z1) = res[runs[0]], res[runs[1]]
common = sorted(set(k0) & set(k1))
i0 = pd.Series(range(len(k0)), index=k0)[common].values
i1 = pd.Series(range(len(k1)), index=k1)[common].values
print("matched items", len(common))
for name in l0:
    print(name, "ARI between seeds", round(ari(l0[name][i0], l1[name][i1]), 3))


def neighbours(z, k=10):
    from vocalatent.analysis.torus import torus_distance

    d = torus_distance(z[:, None, :], z[None, :, :])
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :k]


n0, n1 = neighbours(z0[i0]), neighbours(z1[i1])
shared = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(n0, n1)])
print("10-NN shared between the two maps", round(float(shared), 3), "(chance", round(10 / len(common), 3), ")")
print(pd.crosstab(pd.Series(l0["job"][i0], name=runs[0]), pd.Series(l1["job"][i1], name=runs[1])))
