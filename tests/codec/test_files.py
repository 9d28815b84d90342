"""compress -> decompress of whole files: the codes are exactly `ndvq encode`'s (1D, 2D, 3D), the decoded
files are `ndvq decode`'s, the prior path, --levels, the stored histogram, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_prior import load_token_model  # tests/codec is on the path (conftest rootdir)

import ndvq.prior
from ndvq.cli import main
from ndvq.codec import compress_files, decompress_files, read_codes
from ndvq.codec.format import SUFFIX
from ndvq.codec.histogram import HISTOGRAM_FILE
from ndvq.errors import CodesError, ConfigError
from ndvq.run.infer import decode, encode

SRC = Path(__file__).resolve().parents[2] / "src"


def _encoded(run, tmp_path) -> dict[str, list[np.ndarray]]:
    """``{file name: [codes per grid]}`` as `ndvq encode` writes them for the run's held-out files."""
    z = np.load(encode(run.run_dir, tmp_path / "codes.npz", data=run.test_dir), allow_pickle=False)
    keys = [k for k in ("codes", "codes_0", "codes_1") if k in z.files] or ["codes"]
    out = {}
    for i, name in enumerate(z["names"]):
        out[Path(str(name)).name] = [z[k][i] if k in z.files else z[f"{k}_item{i:06d}"] for k in keys]
    return out


@pytest.mark.parametrize("kind", ["audio", "image", "volume"])
def test_round_trip_gives_encode_codes_and_decode_files(kind, runs, tmp_path):
    run = runs(kind)
    packed = compress_files(run.run_dir, run.files, tmp_path / "packed")
    assert [p.name for p in packed] == [f.name.split(".")[0] + SUFFIX for f in run.files]
    expected = _encoded(run, tmp_path)
    for p, f in zip(packed, run.files):
        grids, header = read_codes(p)
        assert header["name"] == f.name and header["probability_model"]["kind"] in ("histogram", "file-histogram", "adaptive")
        assert [g.numpy().tolist() for g in grids] == [e.tolist() for e in expected[f.name]]
    restored = decompress_files(packed, tmp_path / "restored")
    reference = decode(run.run_dir, tmp_path / "codes.npz", tmp_path / "reference")
    assert sorted(p.name for p in restored) == sorted(p.name for p in reference)
    for a in restored:
        b = tmp_path / "reference" / a.name
        if kind == "image":  # PNG: identical pixels
            from PIL import Image

            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
        elif kind == "audio":
            import soundfile as sf

            (x, ra), (y, rb) = sf.read(str(a)), sf.read(str(b))
            assert ra == rb == 8000 and np.array_equal(x, y)
        else:
            import nibabel as nib

            va, vb = nib.load(str(a)), nib.load(str(b))
            assert np.allclose(va.affine, np.diag([0.5, 0.5, 1.0, 1.0])) and np.array_equal(va.get_fdata(), vb.get_fdata())
    assert not [p for p in (tmp_path / "restored").rglob(".*")]  # no temporary left


def test_histogram_is_stored_with_the_run_and_keyed_by_the_checkpoint(runs, tmp_path):
    run = runs("image")
    compress_files(run.run_dir, run.files[:1], tmp_path / "a", prior="none")
    stored = json.loads((run.run_dir / HISTOGRAM_FILE).read_text())
    assert stored["split"] == "train" and stored["n_items"] == 3 and len(stored["counts"]) == 1
    assert sum(stored["counts"][0]) == 3 * 5 * 6  # every code of the 3 padded 20x24 train images
    stored["fingerprint"] = "0" * 16  # as if the checkpoint had changed
    stored["counts"][0] = [0] * len(stored["counts"][0])
    (run.run_dir / HISTOGRAM_FILE).write_text(json.dumps(stored))
    compress_files(run.run_dir, run.files[:1], tmp_path / "b", prior="none")
    again = json.loads((run.run_dir / HISTOGRAM_FILE).read_text())
    assert again["fingerprint"] != "0" * 16 and sum(again["counts"][0]) == 90


def _own_entropy_bits(grids) -> float:
    flat = grids[0].reshape(-1).numpy()
    n = np.bincount(flat).astype(np.float64)
    n = n[n > 0]
    return float(-(n * np.log2(n / n.sum())).sum())


@pytest.mark.parametrize("run_counts", ["useless", "matching"])
def test_histogram_or_the_files_own_whichever_is_smaller(run_counts, runs, tmp_path, monkeypatch):
    """A run histogram that fits the file badly loses to the file's own counts, stored (then the payload is
    within 1% of the codes' empirical entropy) or learnt while coding (adaptive: the file is no larger); one
    that fits well is kept (no table in the header)."""
    from codeckit import png

    import ndvq.codec.files as files
    from ndvq.codec.format import unpack
    from ndvq.codec.histogram import HistogramModel

    run = runs("image")
    png(tmp_path / "big.png", 7, size=(96, 80))  # 480 codes: the header's table is worth it
    grids = read_codes(compress_files(run.run_dir, [tmp_path / "big.png"], tmp_path / "ref")[0])[0]
    own = np.bincount(grids[0].reshape(-1).numpy(), minlength=16)
    counts = [[10**6] + [0] * 15] if run_counts == "useless" else [(own * 1000).tolist()]
    fake = HistogramModel(counts)
    monkeypatch.setattr(files, "histogram_for_run", lambda loaded, fp: fake)
    p = compress_files(run.run_dir, [tmp_path / "big.png"], tmp_path / "p", prior="none")[0]
    header, words = unpack(p.read_bytes(), str(p))
    got, _ = read_codes(p)
    assert np.array_equal(got[0].numpy(), grids[0].numpy())
    if run_counts == "useless":
        # the adaptive histogram (learns the file's counts while coding, no table) or the file's own table
        assert header["probability_model"]["kind"] in ("adaptive", "file-histogram")
        monkeypatch.setattr(files, "ADAPTIVE_STRENGTHS", ())  # only the run's and the file's own tables left
        table = compress_files(run.run_dir, [tmp_path / "big.png"], tmp_path / "t", prior="none")[0]
        t_header, t_words = unpack(table.read_bytes(), str(table))
        assert t_header["probability_model"]["kind"] == "file-histogram"
        assert 32 * len(t_words) <= 1.01 * _own_entropy_bits(grids) + 64  # the payload is the empirical entropy
        assert p.stat().st_size <= table.stat().st_size + 4  # the choice is never larger (an ANS word of slack)
        assert np.array_equal(read_codes(table)[0][0].numpy(), grids[0].numpy())
    else:
        assert header["probability_model"] == {"kind": "histogram", "fingerprint": fake.fingerprint}


@pytest.fixture
def fake_prior(monkeypatch):
    monkeypatch.setattr(ndvq.prior, "load_token_model", load_token_model, raising=False)


def test_prior_path_round_trips_and_is_used_by_auto(runs, tmp_path, fake_prior):
    run = runs("residual")
    packed = compress_files(run.run_dir, run.files, tmp_path / "p")
    expected = _encoded(run, tmp_path)
    for p, f in zip(packed, run.files):
        grids, header = read_codes(p)
        assert header["probability_model"] == {"kind": "prior", "fingerprint": "fake0001"} and header["block"] == [8, 8]
        assert np.array_equal(grids[0].numpy(), expected[f.name][0])
    assert decompress_files(packed, tmp_path / "out")


@pytest.mark.parametrize("prior", ["none", "auto"])
def test_hierarchical_codes_round_trip(prior, runs, tmp_path, fake_prior):
    """Two grids of different codebook sizes (8 top, 16 bottom) in one tile order, histogram and prior."""
    run = runs("hierarchical")
    packed = compress_files(run.run_dir, run.files, tmp_path / "p", prior=prior)
    expected = _encoded(run, tmp_path)
    for p, f in zip(packed, run.files):
        grids, header = read_codes(p)
        assert len(grids) == 2 and [g.numpy().tolist() for g in grids] == [e.tolist() for e in expected[f.name]]
    assert len(decompress_files(packed, tmp_path / "o")) == len(run.files)


def test_prior_fingerprint_must_match(runs, tmp_path, monkeypatch, fake_prior):
    run = runs("image")
    packed = compress_files(run.run_dir, run.files[:1], tmp_path / "p")
    monkeypatch.setattr(ndvq.prior, "load_token_model", lambda d: load_token_model(d, "other", None))
    with pytest.raises(CodesError, match="fake0001"):
        decompress_files(packed, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prior_required_without_one_is_one_line(runs, tmp_path):
    with pytest.raises(ConfigError, match="no trained prior"):
        compress_files(runs("image").run_dir, runs("image").files, tmp_path / "p", prior="prior")


def test_levels_keep_a_prefix_and_cost_fewer_bits(runs, tmp_path):
    run = runs("residual")
    full = _encoded(run, tmp_path)
    sizes = {}
    for k in (1, 2, 3):
        packed = compress_files(run.run_dir, run.files, tmp_path / f"k{k}", levels=k)
        grids, header = read_codes(packed[0])
        assert header["levels"] == k and np.array_equal(grids[0].numpy(), full[run.files[0].name][0][..., :k])
        sizes[k] = sum(p.stat().st_size for p in packed)
        out = decompress_files(packed, tmp_path / f"d{k}")
        assert len(out) == len(run.files)
    assert sizes[1] < sizes[2] < sizes[3]
    # k = all levels decodes exactly as the full model
    from PIL import Image

    ref = decode(run.run_dir, tmp_path / "codes.npz", tmp_path / "ref")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "d3" / ref[0].name)), np.asarray(Image.open(ref[0])))
    with pytest.raises(ConfigError, match="1..3"):
        compress_files(run.run_dir, run.files, tmp_path / "k9", levels=9)


def test_levels_on_a_non_residual_model_is_one_line(runs, tmp_path, capsys):
    run = runs("image")
    code = main(["compress", str(run.run_dir), str(run.files[0]), "--out", str(tmp_path / "o"), "--levels", "2"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "residual quantizer" in err, err


def test_decompress_in_a_fresh_process_with_other_threads_is_bit_identical(runs, tmp_path, fake_prior):
    """Files coded with each histogram kind and with a prior (a deterministic fake) decode to the same codes
    in a new process with 2 threads as here with 1."""
    import ndvq.codec.files as files

    run = runs("image")
    packed = []
    for prior in ("none", "auto"):
        packed += compress_files(run.run_dir, run.files, tmp_path / prior, prior=prior)
    kinds = [read_codes(p)[1]["probability_model"]["kind"] for p in packed]
    assert "histogram" in kinds[0] and kinds[len(run.files):] == ["prior"] * len(run.files)
    everything = files._candidates
    for kind in ("histogram", "file-histogram", "adaptive"):  # every histogram kind, forced
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(files, "_candidates", lambda *a, kind=kind: [c for c in everything(*a) if c[2]["kind"] == kind])
            packed += compress_files(run.run_dir, run.files, tmp_path / kind, prior="none")
    assert {read_codes(p)[1]["probability_model"]["kind"] for p in packed[-3 * len(run.files):]} == {
        "histogram", "file-histogram", "adaptive"}
    here = [read_codes(p)[0][0].numpy().tolist() for p in packed]
    script = ("import json, sys, torch; torch.set_num_threads(2); import fake_prior; fake_prior.install(); "
              "from ndvq.codec import read_codes; "
              "print(json.dumps([read_codes(p)[0][0].numpy().tolist() for p in sys.argv[1:]]))")
    env = {"PYTHONPATH": f"{SRC}:{Path(__file__).parent}", "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script, *map(str, packed)], capture_output=True, text=True, env=env,
                         check=True)
    assert json.loads(out.stdout) == here
    assert torch.get_num_threads() != 2


# ------------------------------------------------------------------------------------ bad input
def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()  # drop what came before (a run trained by a fixture)
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _bad_files(good: Path, tmp: Path) -> dict[str, Path]:
    blob = good.read_bytes()
    bad = {"truncated": blob[: len(blob) // 2], "corrupted": blob[:-9] + bytes([blob[-9] ^ 1]) + blob[-8:],
           "format version": blob[:8] + (99).to_bytes(2, "little") + blob[10:],
           "not an .ndvq file": b"\x89PNG\r\n\x1a\n" + bytes(40)}
    out = {}
    for what, data in bad.items():
        out[what] = tmp / f"{what.replace(' ', '_').replace('.', '')}.ndvq"
        out[what].write_bytes(data)
    return out


def test_each_bad_file_is_one_line_naming_it_and_writes_nothing(runs, tmp_path, capsys):
    run = runs("image")
    good = compress_files(run.run_dir, run.files[:1], tmp_path / "p")[0]
    for what, path in _bad_files(good, tmp_path).items():
        out = tmp_path / f"out-{path.stem}"
        code, err = _cli(["decompress", good, path, "--out", out], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and what in err and path.name in err, (what, err)
        assert not out.exists() or not any(out.iterdir()), what  # not even the good file before it


def test_a_file_from_another_run_is_refused(runs, tmp_path, capsys):
    image, residual = runs("image"), runs("residual")
    good = compress_files(image.run_dir, image.files[:1], tmp_path / "p")[0]
    code, err = _cli(["decompress", good, "--run", residual.run_dir, "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "another model" in err and good.name in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_compress_decompress(runs, tmp_path, capsys):
    run = runs("image")
    code, err = _cli(["compress", run.run_dir, *run.files, "--out", tmp_path / "p", "--prior", "none"], capsys)
    assert code == 0, err
    code, err = _cli(["decompress", *sorted((tmp_path / "p").glob("*.ndvq")), "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(f.name for f in run.files)
    code, err = _cli(["compress", run.run_dir, tmp_path / "missing.png", "--out", tmp_path / "q"], capsys)
    assert code == 2 and "missing.png" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("cmd", ["compress", "decompress"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and f"usage: ndvq {cmd}" in capsys.readouterr().out


def test_a_failing_compress_leaves_no_partial_file(runs, tmp_path, monkeypatch):
    """The write fails after the temporary file was created: neither it nor the .ndvq remains."""
    import ndvq.codec.files as files

    run = runs("image")
    monkeypatch.setattr(files, "pack", lambda header, words: object())  # fh.write(object()) raises TypeError
    with pytest.raises(TypeError):
        compress_files(run.run_dir, run.files, tmp_path / "p")
    assert (tmp_path / "p").is_dir() and not list((tmp_path / "p").iterdir())


def test_an_unreadable_input_is_named_with_its_read_error_and_costs_only_itself(runs, tmp_path, capsys):
    """A truncated input among good ones: the good ones are compressed (and decompress), the bad one is named
    with its read error and the exit code says not everything was done (it used to refuse the whole batch)."""
    run = runs("image")
    good = Path(run.files[0])
    broken = tmp_path / f"broken{good.suffix}"
    broken.write_bytes(good.read_bytes()[:300])  # a truncated image: found by the scan, skipped when read
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    out = tmp_path / "o"
    missing = tmp_path / "missing.png"
    code, err = _cli(["compress", run.run_dir, missing, good, broken, text, "--out", out], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and str(text) in lines[-1] and "is not an image file" in lines[-1], err
    assert "2 more input(s)" in lines[-1] and "the other 1 file(s) were compressed" in lines[-1]
    assert f"{str(missing)!r} does not exist" in lines[-3]  # named in input order
    assert f"{str(broken)!r} could not be read: OSError" in lines[-2] and "ndvq-compress-" not in err
    assert sorted(p.name for p in out.iterdir()) == [f"{good.stem}.ndvq"]
    assert decompress_files(sorted(out.iterdir()), tmp_path / "back")[0].name == good.name
    code, err = _cli(["compress", run.run_dir, broken, "--out", tmp_path / "none"], capsys)  # nothing usable
    assert code == 2 and str(broken) in err.strip().splitlines()[-1] and "ndvq-compress-" not in err, err
