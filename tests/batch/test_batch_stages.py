"""The batch run's pieces on their own: item chunks, item ranges, the cluster configuration,
the CLI's cluster flags, and a stage resumed on its own (embedding parts)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vocalatent._utils import DataError, ParameterError
from vocalatent.batch import ItemRange, item_chunks
from vocalatent.jobqueue import check_cluster_options, describe_request, load_cluster_config


@pytest.mark.parametrize("n,chunk", [(1, 1), (10, 3), (200_000, 20_000), (200_001, 20_000),
                                     (7, 100)])
def test_item_chunks_cover_every_item_once_in_order(n, chunk):
    ranges = item_chunks(n, chunk)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(b0 == a1 for (_, a1), (b0, _) in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) <= chunk and max(sizes) - min(sizes) <= 1   # no small straggler
    assert len(ranges) == -(-n // chunk)


@pytest.mark.parametrize("n,chunk,block", [(200_000, 20_480, 4096), (200_000, 20_000, 4096),
                                           (30, 8, 4), (5, 8, 4), (4097, 1, 4096)])
def test_item_chunks_are_whole_blocks(n, chunk, block):
    ranges = item_chunks(n, chunk, block=block)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(b0 == a1 for (_, a1), (b0, _) in zip(ranges, ranges[1:]))
    assert all(a % block == 0 for a, _ in ranges)                 # chunks start on blocks
    assert all(b - a <= max(block, chunk) for a, b in ranges)
    assert item_chunks(200_000, 20_480, block=4096)[:2] == [(0, 20480), (20480, 40960)]


def test_item_chunks_rejects_bad_size():
    assert item_chunks(0, 5) == []
    with pytest.raises(ParameterError, match="chunk_items"):
        item_chunks(10, 0)


def test_item_range_reads_the_right_rows(rng):
    x = rng.normal(size=(50, 3, 4)).astype(np.float32)
    r = ItemRange(x, 10, 30)
    assert r.shape == (20, 3, 4) and len(r) == 20 and r.ndim == 3
    np.testing.assert_array_equal(np.asarray(r), x[10:30])
    np.testing.assert_array_equal(r[np.array([0, 5, 19])], x[[10, 15, 29]])
    np.testing.assert_array_equal(r[-1], x[29])
    np.testing.assert_array_equal(r[2:8:3], x[12:18:3])
    with pytest.raises(IndexError):
        r[20]
    with pytest.raises(ParameterError, match=r"\[40, 60\)"):
        ItemRange(x, 40, 60)


def test_cluster_config_is_checked_on_load(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text('partition = "gpu"\naccount = "lab"\ncores = 4\nmemory = "16GB"\n'
                    'job_extra_directives = ["--qos=long"]\nstart_timeout = 60\n')
    opts = load_cluster_config(good)
    assert opts == {"queue": "gpu", "account": "lab", "cores": 4, "memory": "16GB",
                    "job_extra_directives": ["--qos=long"], "start_timeout": 60}
    assert describe_request(opts, 3) == ("3 job(s) of queue='gpu', account='lab', cores=4, "
                                         "memory='16GB', job_extra_directives=['--qos=long']")
    bad = tmp_path / "bad.toml"
    bad.write_text('acount = "lab"\n')
    with pytest.raises(ParameterError) as err:
        load_cluster_config(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: unknown key 'acount'; did you mean 'account'?") and "\n" not in msg
    bad.write_text('cores = "four"\n')
    with pytest.raises(ParameterError, match=r"bad\.toml: cores must be an integer > 0; got 'four'"):
        load_cluster_config(bad)
    bad.write_text('job_extra_directives = "--qos=long"\n')
    with pytest.raises(ParameterError, match="job_extra_directives must be a list of strings"):
        load_cluster_config(bad)
    bad.write_text('queue = "a"\npartition = "b"\n')
    with pytest.raises(ParameterError, match="both set the partition"):
        load_cluster_config(bad)
    bad.write_text("cores = [\n")
    with pytest.raises(DataError, match="invalid TOML"):
        load_cluster_config(bad)
    with pytest.raises(DataError, match="cannot read"):
        load_cluster_config(tmp_path / "missing.toml")
    with pytest.raises(ParameterError, match="unknown key 'n_workers'"):
        check_cluster_options({"n_workers": 3})
    # jobqueue.yaml's `name` is the job name (sbatch -J)
    assert check_cluster_options({"name": "vl"}) == {"job_name": "vl"}
    with pytest.raises(ParameterError, match="both set the job name"):
        check_cluster_options({"name": "a", "job_name": "b"})


def test_cli_cluster_flags_are_checked(tmp_path):
    from vocalatent.cli import main

    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "a.wav").write_bytes(b"")
    man = tmp_path / "m.csv"
    man.write_text("session,path\ns1,rec\n")
    res = CliRunner().invoke(main, ["batch", str(man), "-o", str(tmp_path / "o"), "--cores", "4"])
    assert res.exit_code == 2 and "--cores only apply to --cluster slurm or pbs" in res.output
    cfg = tmp_path / "c.toml"
    cfg.write_text('walltme = "01:00:00"\n')
    res = CliRunner().invoke(main, ["batch", str(man), "-o", str(tmp_path / "o"), "--cluster",
                                    "slurm", "--cluster-config", str(cfg)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {cfg}: unknown key 'walltme'; did you mean "
                                  "'walltime'? (known keys: " + res.output.split("(known keys: ")[1].strip())
    assert not (tmp_path / "o").exists()   # refused before anything was written


@pytest.mark.slow
def test_embed_stage_resumes_on_its_own_from_part_markers(tmp_path):
    """Plan a run, run its stages one by one on a LocalCluster; lose one embedded part and the
    merged output, then run embed_stage alone: only that part is recomputed, same result."""
    import distributed
    import xarray as xr

    from vocalatent import batch as B
    from vocalatent.audio.synthetic import write_synthetic_dataset
    from vocalatent.embedding import read_embedding

    write_synthetic_dataset(tmp_path / "rec", n_files=2, n_syllables=15, random_state=3)
    man = tmp_path / "m.csv"
    man.write_text("session,path,animal\nonly,rec,b1\n")
    over = {"model": {"max_epochs": 1, "n_lattice": 89, "n_eval_lattice": 144,
                      "n_eval_shifts": 1, "batch_size": 32, "validation": 0.1},
            "spectrogram": {"n_freq": 16, "n_time": 16}}
    run = B.plan_batch(man, tmp_path / "out", overrides=over, device="cpu", seed=0,
                       embed_chunk_items=8, embed_block_items=4)
    assert not (tmp_path / "out").exists()                      # planning writes nothing
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cl, distributed.Client(cl) as client:
        run.client = client
        for stage in (B.segment_stage, B.calibrate_stage, B.store_stage, B.train_stage):
            stage(run)
        st = run.sessions["only"]
        assert st.usable and st.n_items > 16
        ranges = B.item_chunks(st.n_items, 8, block=4)
        assert len(ranges) >= 3

        def crash(*args, **kwargs):
            raise KeyboardInterrupt("killed after the parts were embedded")

        B_merge = B._merge_parts
        B._merge_parts = crash
        try:
            with pytest.raises(KeyboardInterrupt):
                B.embed_stage(run)
        finally:
            B._merge_parts = B_merge
        parts = st.dir / "embedding_parts"
        files = sorted(parts.glob("*.nc"))
        assert len(files) == len(ranges) and not (st.dir / "embedding.json").exists()
        for p in files[2:]:                                      # and the later parts lost
            p.unlink()
            p.with_suffix(".json").unlink()
        # a new process: plan again; the earlier stages are skipped by their markers
        run2 = B.plan_batch(man, tmp_path / "out", overrides=over, device="cpu", seed=0,
                            embed_chunk_items=8, embed_block_items=4)
        run2.client = client
        seen = []
        orig = B._run_tasks

        def spy(client_, tasks, desc):
            seen.append((desc, sorted(tasks)))
            return orig(client_, tasks, desc)

        B._run_tasks = spy
        try:
            for stage in (B.segment_stage, B.calibrate_stage, B.store_stage, B.train_stage):
                stage(run2)
            assert B.embed_stage(run2) == ["only"]
        finally:
            B._run_tasks = orig
        one = B.plan_batch(man, tmp_path / "one", overrides=over, device="cpu", seed=0,
                           model=run2.model_path, embed_block_items=4)
        one.client = client
        for stage in (B.segment_stage, B.calibrate_stage, B.store_stage, B.train_stage):
            stage(one)
        assert B.embed_stage(one) == ["only"]                    # one task: 30 < 20000 items
    assert [d for d, t in seen if t] == ["embedding"]            # nothing else recomputed
    assert dict(seen)["embedding"] == [("only", a) for a, _ in ranges[2:]]  # the lost parts only
    merged = read_embedding(st.dir / "embedding.nc")
    whole = read_embedding(tmp_path / "one" / "sessions" / "only" / "embedding.nc")
    per_item = [v for v in whole.data_vars if "item" in whole[v].dims]
    xr.testing.assert_identical(merged, whole)                   # value for value
    assert json.loads((st.dir / "embedding.json").read_text())["parts"] == [list(r) for r in ranges]
    assert not parts.exists()
