"""Markdown tables and PNG figures for benchmarks/suite.py."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from vocalatent._utils import atomic_path

MODEL_ORDER = {"qlvm": 0, "vae": 1, "iwae": 2}
COLORS = {"qlvm": "tab:blue", "vae": "tab:orange", "iwae": "tab:green"}


def _fmt(v, nd=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}"


def _mean_se(values):
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def convergence_cell(rs) -> str:
    """The convergence column: the smallest fraction of converged items over the runs, the
    evaluation lattice sizes and whether the adaptive lattice met its tolerance in every run."""
    fr = [r.get("converged_fraction") for r in rs if r.get("converged_fraction") is not None]
    if not fr:
        return "– (not a lattice estimate)" if rs[0].get("estimator", "lattice") != "lattice" else "not checked"
    ms = sorted({int(r["n_eval_lattice"]) for r in rs if r.get("n_eval_lattice")})
    m_txt = f"m={ms[0]:,}" if len(ms) == 1 else f"m={ms[0]:,}-{ms[-1]:,}"
    tol = "tol met" if all(r.get("tol_met") for r in rs) else "**tol NOT met**"
    pct = 100 * min(fr)
    flag = "" if pct >= 99 else "**"
    return f"{flag}{pct:.1f} %{flag}, {m_txt}, {tol}"


def group_runs(runs):
    """Aggregate runs over seeds: one row per (part, dataset, label)."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["label"])].append(r)
    out = []
    for (dataset, label), rs in groups.items():
        g = {"dataset": dataset, "label": label, "model": rs[0]["model"], "latent_dim": rs[0]["latent_dim"],
             "m": rs[0]["m"], "k": rs[0]["k"], "n_seeds": len(rs), "evals_per_epoch": rs[0]["evals_per_epoch"],
             "estimator": rs[0]["estimator"], "n_features": rs[0]["n_features"], "epochs": rs[0]["epochs"],
             "parts": sorted({r["part"] for r in rs})}
        for key in ("log_likelihood", "bits_per_dim", "training_bound", "elbo", "iwae_eval",
                    "seconds_per_epoch"):
            g[key], g[key + "_se"] = _mean_se([r.get(key, float("nan")) for r in rs])
        g["shift_se"] = float(np.nanmean([r.get("shift_stderr", float("nan")) for r in rs])) \
            if any(math.isfinite(r.get("shift_stderr", float("nan"))) for r in rs) else float("nan")
        g["bound_name"] = rs[0].get("bound_name", "")
        g["convergence"] = convergence_cell(rs)
        g["iwae_eval_k"] = rs[0].get("iwae_eval_k")
        out.append(g)
    return out


def _main_table(groups, size):
    lines = ["| data set | model | held-out log p(x) (nats) ± SE seeds [SE shifts] | converged (items, m, tol) | "
             "bits/dim | training bound (own) | IWAE-K (encoder) | decoder evals / epoch | s / epoch (fit) | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [g for g in groups if g["latent_dim"] == 2 and (g["model"] != "qlvm" or g["m"] == size.qlvm_m)
            and "main" in g["parts"]]
    rows.sort(key=lambda g: (g["dataset"], MODEL_ORDER[g["model"]]))
    for g in rows:
        bound = f"{_fmt(g['training_bound'])} ({g['bound_name']})"
        iw = f"{_fmt(g['iwae_eval'])} (K={g['iwae_eval_k']})" if g["model"] != "qlvm" else "–"
        lines.append(f"| {g['dataset']} | {g['label']} | {_fmt(g['log_likelihood'])} ± "
                     f"{_fmt(g['log_likelihood_se'])} [{g['shift_se']:.1e}] | {g['convergence']} | "
                     f"{_fmt(g['bits_per_dim'], 4)} | "
                     f"{bound} | {iw} | {g['evals_per_epoch']:,} | {_fmt(g['seconds_per_epoch'])} | {g['n_seeds']} |")
    return "\n".join(lines), rows


def _sweep_table(groups, size, dataset):
    lines = ["| model | estimator of log p(x) | held-out log p(x) (nats) ± SE seeds | converged (items, m, tol) | "
             "bits/dim | own bound | decoder evals / epoch | s / epoch | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [g for g in groups if g["dataset"] == dataset]
    rows.sort(key=lambda g: (MODEL_ORDER[g["model"]], g["latent_dim"], g["m"] or 0))
    for g in rows:
        lines.append(f"| {g['label']} | {g['estimator']} | {_fmt(g['log_likelihood'])} ± "
                     f"{_fmt(g['log_likelihood_se'])} | {g['convergence']} | {_fmt(g['bits_per_dim'], 4)} | "
                     f"{_fmt(g['training_bound'])} ({g['bound_name']}) | {g['evals_per_epoch']:,} | "
                     f"{_fmt(g['seconds_per_epoch'])} | {g['n_seeds']} |")
    return "\n".join(lines), rows


def _plot_pareto(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, xkey, xlabel in ((axes[0], "evals_per_epoch", "decoder evaluations per epoch"),
                             (axes[1], "seconds_per_epoch", "wall time per epoch (s, CPU fit)")):
        qlvm2 = sorted([g for g in rows if g["model"] == "qlvm" and g["latent_dim"] == 2], key=lambda g: g["m"])
        if qlvm2:
            ax.errorbar([g[xkey] for g in qlvm2], [g["log_likelihood"] for g in qlvm2],
                        yerr=[0 if not math.isfinite(g["log_likelihood_se"]) else g["log_likelihood_se"]
                              for g in qlvm2], color=COLORS["qlvm"], marker="o", label="QLVM d=2, m sweep")
            for g in qlvm2:
                ax.annotate(f"m={g['m']}", (g[xkey], g["log_likelihood"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=COLORS["qlvm"])
        for g in rows:
            if g["model"] == "qlvm" and g["latent_dim"] == 2:
                continue
            marker = {1: "v", 2: "o", 3: "^", 8: "s", 32: "D"}.get(g["latent_dim"], "x")
            face = "none" if g["estimator"] != "lattice" else COLORS[g["model"]]
            ax.errorbar([g[xkey]], [g["log_likelihood"]],
                        yerr=[0 if not math.isfinite(g["log_likelihood_se"]) else g["log_likelihood_se"]],
                        color=COLORS[g["model"]], marker=marker, mfc=face, ls="none",
                        label=g["label"] + ("" if g["estimator"] == "lattice" else f" [{g['estimator']}]"))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out log p(x) (nats / item)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    _save(fig, path)


def _plot_latent(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind in ("qlvm", "vae"):
        gs = sorted([g for g in rows if g["model"] == kind and (kind != "qlvm" or g["m"] in
                                                                 _latent_m(rows))], key=lambda g: g["latent_dim"])
        if not gs:
            continue
        ax.errorbar([g["latent_dim"] for g in gs], [g["log_likelihood"] for g in gs],
                    yerr=[0 if not math.isfinite(g["log_likelihood_se"]) else g["log_likelihood_se"] for g in gs],
                    marker="o", color=COLORS[kind], label=kind.upper())
        for g in gs:
            ax.annotate(g["estimator"] if g["estimator"] != "lattice" else f"{g['evals_per_epoch']:,} ev/ep",
                        (g["latent_dim"], g["log_likelihood"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=COLORS[kind])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent dimension d")
    ax.set_ylabel("held-out log p(x) (nats / item)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _latent_m(rows):
    """Training m of the QLVM per d in the latent sweep (one per d: the smallest part label)."""
    return {g["m"] for g in rows if g["model"] == "qlvm" and ("latent" in g["parts"] or g["latent_dim"] == 2)}


def _plot_main(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({g["dataset"] for g in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        gs = sorted([g for g in rows if g["dataset"] == name], key=lambda g: MODEL_ORDER[g["model"]])
        x = np.arange(len(gs))
        ax.bar(x, [g["log_likelihood"] for g in gs], yerr=[g["log_likelihood_se"] for g in gs],
               color=[COLORS[g["model"]] for g in gs], capsize=3)
        ax.scatter(x, [g["training_bound"] for g in gs], color="k", marker="_", s=300, zorder=3,
                   label="own training bound")
        ax.set_xticks(x, [g["label"].replace(" (", "\n(") for g in gs], fontsize=7)
        lo = min(min(g["log_likelihood"], g["training_bound"]) for g in gs)
        hi = max(g["log_likelihood"] for g in gs)
        pad = 0.15 * (hi - lo + 1e-9) + 0.5
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("held-out log p(x) (nats / item)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_maps(maps_by_ds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in maps_by_ds if maps_by_ds[n]["maps"]]
    if not names:
        return False
    ncol = max(len(maps_by_ds[n]["maps"]) for n in names)
    fig, axes = plt.subplots(len(names), ncol, figsize=(3.4 * ncol, 3.2 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        entry = maps_by_ds[name]
        for c, (method, emb) in enumerate(entry["maps"].items()):
            ax = axes[r][c]
            ax.scatter(emb[:, 0], emb[:, 1], c=entry["y"], cmap="tab10", s=2, vmin=0, vmax=9)
            ax.set_title(f"{name}: {method}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if "torus" in method:
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
        for c in range(len(entry["maps"]), ncol):
            axes[r][c].axis("off")
    fig.tight_layout()
    _save(fig, path)
    return True


def _save(fig, path):
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    Path(path).chmod(0o644)
    plt.close(fig)


def write_report(results, *, size, out: Path, command: str, machine: str, total_seconds: float,
                 device: str) -> Path:
    out = Path(out)
    figdir = out / "figures"
    tag = "" if size.name == "small" else f"_{size.name}"
    groups = group_runs(results["runs"])
    md = [f"# Benchmark suite: QLVM vs VAE vs IWAE (size `{size.name}`)", "",
          "Generated by `benchmarks/suite.py`; read it with docs/baselines.md (method, honest reading).", "",
          f"- command: `{command}`", f"- machine: {machine}", f"- device: {device}",
          f"- total wall time: {total_seconds / 60:.1f} min",
          f"- every model: MLP decoder hidden {tuple(size.hidden)} (the VAE/IWAE encoder mirrors it), "
          f"batch {size.batch_size}, Adam lr {size.lr}, a fixed number of epochs per data set (no early "
          f"stopping), same train/test split (80/20, seed 0) for all seeds; IWAE k = {size.iwae_k}",
          "- held-out log p(x): lattice estimate over the union of "
          f"{size.n_eval_shifts} random shifts, for the VAE/IWAE through the inverse normal CDF (float64, clip 1e-15), "
          "with the adaptive lattice (`evaluate(n_lattice=\"auto\")`: m grown along the lattice sequence "
          "until the mean moves by < 0.05 nats/item and >= 99 % of the items are converged, then the items "
          "still unconverged refined locally, docs/method.md §7.3); SE seeds = "
          "standard error of the per-seed means, [SE shifts] = mean over seeds of the standard error of the "
          "per-shift means; converged = the smallest fraction of test items converged over the seeds "
          "(per-shift estimates within 0.1 nats and lattice-posterior ESS >= 2 on every shift), the "
          "evaluation lattice sizes used, and whether the tolerance was met in every run; a "
          "converged entry in bold is one that did not converge (its figure is not to be read as log p(x))",
          "- decoder evaluations per epoch: QLVM ceil(N/B)·m, VAE N, IWAE N·k (N training items)", ""]
    if results["skipped"]:
        md += ["**Skipped:** " + "; ".join(results["skipped"]), ""]
    md += ["## Data sets", "", "| name | description | likelihood | train | test | D | epochs |",
           "|---|---|---|---|---|---|---|"]
    for name, info in results["datasets"].items():
        md.append(f"| {name} | {info['description']} | {info['likelihood']} | {info['n_train']} | "
                  f"{info['n_test']} | {info['n_features']} | {info['epochs']} |")
    md.append("")
    if any("main" in g["parts"] for g in groups):
        table, rows = _main_table(groups, size)
        md += ["## Held-out log p(x), 2-D models, same decoder", "", table, "",
               "Own training bound on the test items: QLVM = the training lattice (m points, one shift) "
               "estimate averaged over shifts; VAE = ELBO (closed-form KL, 16 samples); IWAE = IWAE-k. "
               "IWAE-K (encoder) = importance sampling with the trained encoder, K samples: a lower bound "
               "on log p(x) that cross-checks the lattice estimate for the baselines.", "",
               f"![main](figures/suite{tag}_main.png)", ""]
        _plot_main(rows, figdir / f"suite{tag}_main.png",
                   f"held-out log p(x), 2-D models (bars) and each model's own bound (black ticks); size {size.name}")
    swept = sorted({g["dataset"] for g in groups if set(g["parts"]) & {"lattice", "latent"}})
    for name in swept:
        sweep, srows = _sweep_table(groups, size, name)
        has_latent = any(g["latent_dim"] != 2 for g in srows)
        md += [f"## {name}: n_lattice ablation" + (" and latent-dimension sweep" if has_latent else ""), "",
               sweep, ""]
        if has_latent:
            md += ["For d > 3 the lattice from the prior is no yardstick; those rows use the encoder's "
                   f"IWAE-{size.iwae_eval_k} estimate (a lower bound on log p(x)).", ""]
        md += [f"![pareto {name}](figures/suite{tag}_pareto_{name}.png)", ""]
        _plot_pareto(srows, figdir / f"suite{tag}_pareto_{name}.png",
                     f"{name}: held-out log p(x) against compute (size {size.name}); hollow = IWAE-K estimate")
        if has_latent:
            md += [f"![latent](figures/suite{tag}_latent_dim.png)", ""]
            _plot_latent(srows, figdir / f"suite{tag}_latent_dim.png", f"{name}: latent dimension (size {size.name})")
    if results["knn"]:
        md += ["## Embedding quality: 5-NN label accuracy (5-fold CV, all items)", "",
               "| data set | map | accuracy ± SE folds | note |", "|---|---|---|---|"]
        for r in results["knn"]:
            md.append(f"| {r['dataset']} | {r['method']} | {_fmt(r['acc'], 3)} ± {_fmt(r['se'], 3)} | "
                      f"{r.get('note', '')} |")
        md.append("")
        if _plot_maps(results["maps"], figdir / f"suite{tag}_maps.png"):
            md += [f"![maps](figures/suite{tag}_maps.png)", ""]
    if results["cost"]:
        mem_kind = "peak RSS during fit above the RSS before it (sampled every 5 ms)" if device == "cpu" else \
            "peak CUDA memory allocated during fit"
        md += [f"## Cost per epoch ({device}; {size.cost_epochs} epochs in a fresh process per model; "
               f"median epoch; memory = {mem_kind})", "",
               "| data set | model | decoder evals / epoch | wall s / epoch | CPU s / epoch | memory (MB) |",
               "|---|---|---|---|---|---|"]
        for r in results["cost"]:
            md.append(f"| {r['dataset']} | {r['label']} | {r['evals_per_epoch']:,} | {_fmt(r['seconds_per_epoch'], 3)} | "
                      f"{_fmt(r.get('cpu_seconds_per_epoch'), 3)} | {_fmt(r['train_extra_mb'], 0)} |")
        md.append("")
    raw = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
           for r in results["runs"]]
    md += ["## Raw runs", "", "<details><summary>one JSON object per fitted model</summary>", "", "```json"]
    md += [json.dumps(r, default=str) for r in raw]
    md += ["```", "", "</details>", ""]
    path = out / f"bench_suite{tag}.md"
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    path.chmod(0o644)
    return path
