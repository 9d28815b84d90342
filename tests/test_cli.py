"""The `ndvq` command line: help, --print-config, one-line errors with exit code 2, and per-modality
2-step training runs followed by eval -> encode -> decode."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ndvq.cli import main

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8", "model.n_codes=16",
        "model.videogpt.n_head=0", "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8", "train.max_steps=2", "train.batch_size=2", "train.log_interval=1",
        "train.val_interval=2", "train.val_batches=1", "train.ckpt_interval=2", "train.sample_interval=2",
        "train.doctor_warnings=false"]


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse --help / usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_python_m_ndvq_help():
    r = subprocess.run([sys.executable, "-m", "ndvq", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("train", "eval", "encode", "decode"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["train", "eval", "encode", "decode"])
def test_help_of_each_command(cmd, capsys):
    code, out, _ = run([cmd, "--help"], capsys)
    assert code == 0 and f"usage: ndvq {cmd}" in out and "--" in out


def test_print_config_is_the_resolved_yaml(capsys):
    code, out, _ = run(["train", "--print-config", "model.n_codes=256", "train.lr_schedule=cyclic"], capsys)
    assert code == 0
    d = yaml.safe_load(out)
    assert d["model"]["n_codes"] == 256 and d["train"]["lr_schedule"] == "cyclic" and "quantizer" in d["model"]


@pytest.mark.parametrize("argv, expected", [
    (["train", "train.learnin_rate=1e-3"], "did you mean 'train.learning_rate'"),
    (["train", "train.learning_rate=7"], "0 < value <= 1"),
    (["train", "-c", "/nonexistent/cfg.yaml"], "does not exist"),
    (["train", "--resume", "/nonexistent/run"], "does not exist"),
    (["train", "data.kind=image", "data.root=/nonexistent/photos", "train.max_steps=1"], "/nonexistent/photos"),
    (["eval", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(argv, expected, capsys, tmp_path):
    code, _, err = run(argv + [f"run.root={tmp_path}"] if argv[0] == "train" and "--resume" not in argv else argv, capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ndvq: error:") and expected in lines[0], err


def test_unreadable_and_empty_inputs_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {n_codes: [unclosed")
    code, _, err = run(["train", "-c", bad], capsys)
    assert code == 2 and "cannot read config" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["train", "data.kind=image", f"data.root={empty}", f"run.root={tmp_path}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "empty" in err.lower() or "no " in err.lower(), err


# ----------------------------------------------------------------------------- tiny data files
def _png(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(low).resize((24, 24), Image.BILINEAR).save(path)


def _video(path: Path, seed: int) -> None:
    import av

    with av.open(str(path), mode="w") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for t in range(8):
            frame = np.full((16, 16, 3), (20 * t + 40 * seed) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _audio(path: Path, seed: int) -> None:
    import soundfile as sf

    t = np.arange(4096) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * (220 + 50 * seed) * t)).astype(np.float32), 8000)


def _series(path: Path, seed: int) -> None:
    t = np.arange(256)[:, None]
    data = np.sin(t / (5 + seed) + np.arange(3)[None]) + 0.01 * seed
    np.savetxt(path, data, delimiter=",", header="a,b,c", comments="")


def _volume(path: Path, seed: int) -> None:
    import nibabel as nib

    v = np.random.default_rng(seed).normal(100, 20, size=(16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(v, np.diag([0.5, 0.5, 1.0, 1.0])), str(path))


MODALITIES = {
    # kind: (writer, file suffix, n files, model/data overrides, expected sample file suffixes)
    "image": (_png, ".png", 5, ["model.n_dims=2", "model.in_channels=3", "model.videogpt.downsample=[4,4]",
                                "data.patch_size=[16,16]"], {".png"}),
    "video": (_video, ".mp4", 3, ["model.n_dims=3", "model.in_channels=3", "model.videogpt.downsample=[2,4,4]",
                                  "data.sequence_length=4", "data.resolution=[16,16]"], {".gif"}),
    "audio": (_audio, ".wav", 3, ["model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[4]",
                                  "data.segment_length=1024"], {".wav", ".png"}),
    "series": (_series, ".csv", 3, ["model.n_dims=1", "model.in_channels=3", "model.videogpt.downsample=[4]",
                                    "data.segment_length=64"], {".png"}),
    "volume": (_volume, ".nii.gz", 3, ["model.n_dims=3", "model.in_channels=1", "model.videogpt.downsample=[4,4,4]",
                                       "data.patch_size=[16,16,16]"], {".png"}),
}


def _make_data(root: Path, kind: str) -> list[str]:
    writer, suffix, n, over, _ = MODALITIES[kind]
    for split, count in (("train", n), ("test", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            writer(root / split / f"{kind}{i}{suffix}", i + (100 if split == "test" else 0))
    return [f"data.kind={kind}", f"data.root={root}", *over]


def test_a_corrupt_file_is_named_once_on_the_console(tmp_path, capsys):
    over = _make_data(tmp_path / "data", "image")
    good = tmp_path / "data" / "train" / "image0.png"
    (tmp_path / "data" / "train" / "broken.png").write_bytes(good.read_bytes()[:60])  # truncated
    with warnings.catch_warnings(record=True) as shown:  # what would reach the console as Python warnings
        warnings.simplefilter("always")
        code, _, err = run(["train", *TINY, *over, f"run.root={tmp_path / 'runs'}", "run.name=r"], capsys)
    assert code == 0, err
    named = [ln for ln in err.splitlines() if "broken.png" in ln]
    assert len(named) == 1 and "skipping unreadable" in named[0], err  # the log line on stderr
    assert not [w for w in shown if "broken.png" in str(w.message)]  # and not the same again as a warning


def test_a_short_clip_beside_a_long_file_fits_the_window_and_names_a_corrupt_file_once(tmp_path, capsys):
    """The audio example on a short clip, two longer files and a corrupt one: the window left at its default
    shrinks to the largest one padded within the warning (the split is built again with it), and the corrupt
    file is named once."""
    import soundfile as sf

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for name, seconds in (("short", 0.3), ("long", 2.3), ("longer", 2.6)):
        t = np.arange(int(seconds * 8000)) / 8000
        sf.write(wavs / f"{name}.wav", 0.5 * np.sin(2 * np.pi * 220 * t), 8000)
    (wavs / "broken.wav").write_bytes(b"RIFF\x00\x00junk")
    code, out, err = run(["train", "-c", Path(__file__).parents[1] / "configs" / "audio" / "example.yaml", f"data.root={wavs}",
                          "data.train_split=1.0", *TINY, "model.n_dims=1", "model.videogpt.downsample=[16]",
                          "train.num_workers=0", f"run.root={tmp_path / 'runs'}", "run.name=r"], capsys)
    assert code == 0, err
    assert "data.segment_length 16384 -> 8192" in out, out  # the largest window padded <= 25% on average
    named = [ln for ln in err.splitlines() if "broken.wav" in ln]
    assert len(named) == 1 and "skipping unreadable" in named[0], err


@pytest.mark.parametrize("kind", list(MODALITIES))
def test_a_run_with_no_validation_split_trains_per_modality(kind, tmp_path, capsys):
    """data.train_split=1 on one folder: every file trains and the empty val split is no error (an audio
    folder used to end in an IndexError: the val split asked the majority rate of no files)."""
    writer, suffix, n, over, _ = MODALITIES[kind]
    (tmp_path / "data").mkdir()
    for i in range(n):
        writer(tmp_path / "data" / f"{kind}{i}{suffix}", i)
    code, _, err = run(["train", *TINY, f"data.kind={kind}", f"data.root={tmp_path / 'data'}", *over,
                        "data.train_split=1.0", f"run.root={tmp_path / 'runs'}", "run.name=r"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("kind", ["samples", *MODALITIES])
def test_two_step_train_per_modality(kind, tmp_path, capsys):
    if kind == "samples":
        over, expected = ["data.kind=samples", "data.patch_size=[16,16]", "data.sample_patches=16"], {".png"}
    else:
        over, expected = _make_data(tmp_path / "data", kind), MODALITIES[kind][4]
    code, out, err = run(["train", *TINY, *over, f"run.root={tmp_path / 'runs'}", "run.name=r"], capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "r"
    assert "finished after 2 steps" in out
    # the start header names the run dir and both splits' data (files, items, item shape)
    assert str(run_dir) in out.split("finished after")[0]
    assert "train data" in out and "val data" in out and "item shape" in out
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state"]["step"] == 2 and ckpt["config"]["data"]["kind"] == kind
    assert list((run_dir / "checkpoints").glob("best-step*.ckpt"))
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and any(r["split"] == "val" for r in recs)
    for key in ("loss", "recon_loss", "commitment_loss", "perplexity", "usage", "window_usage", "dead_codes", "lr",
                "samples_per_sec", "nonfinite_steps"):
        assert key in train[-1], key
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    written = {"".join(p.suffixes[-1:]) for p in (run_dir / "samples").rglob("*") if p.is_file()}
    assert expected <= written, written
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["kind"] == kind


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_eval_encode_decode_round_trip(kind, tmp_path, capsys):
    over = _make_data(tmp_path / "data", kind)
    code, _, err = run(["train", *TINY, *over, f"run.root={tmp_path / 'runs'}", "run.name=r"], capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "r"

    code, out, err = run(["eval", run_dir, "--out", tmp_path / "eval.json"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "eval.json").read_text())
    for key in ("psnr", "ssim", "mse", "mae", "usage", "perplexity", "bits_per_element", "entropy_bits_per_element"):
        assert key in res and np.isfinite(res[key]), key
    assert res["n_items"] == 2 and "psnr" in out
    channels, n_dims = (3, 2) if kind == "image" else (1, 3)  # log2(16 codes) bits per 4**n_dims x C inputs
    assert res["bits_per_element"] == pytest.approx(4 / (channels * 4**n_dims), rel=1e-6)

    codes_path = tmp_path / "codes.npz"
    code, _, err = run(["encode", run_dir, "--data", tmp_path / "data" / "test", "--out", codes_path], capsys)
    assert code == 0, err
    z = np.load(codes_path, allow_pickle=False)
    assert len(z["names"]) == 2 and str(z["modality"]) == ("image" if kind == "image" else "volume")
    codes = z["codes"] if "codes" in z else z["codes_item000000"][None]
    assert codes.dtype.kind == "i" and codes.min() >= 0 and codes.max() < 16
    assert list(codes.shape[1:]) == list(z["latent_shapes"][0])

    code, _, err = run(["decode", run_dir, codes_path, "--out", tmp_path / "decoded"], capsys)
    assert code == 0, err
    files = sorted(p for p in (tmp_path / "decoded").rglob("*") if p.is_file())
    assert files, "decode wrote nothing"
    # decoding the codes gives the same reconstruction as the model's forward pass
    from ndvq import build
    from ndvq.run.checkpoint import load_model

    loaded = load_model(run_dir)
    model, cfg = loaded.model, loaded.config
    ds = build.build_dataset(cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"root": tmp_path / "data" / "test", "val_dir": None})}), "all", pad_multiple=tuple(model.downsample))
    x = ds[0]["data"][None]
    with torch.no_grad():
        z = model.encode(x)
        assert torch.equal(z[0].cpu(), torch.from_numpy(codes[0]).long())
        assert torch.allclose(model.decode(z), model(x).reconstruction, atol=1e-5)


def test_resume_with_changed_model_is_refused(tmp_path, capsys):
    over = ["data.kind=samples", "data.patch_size=[16,16]", "data.sample_patches=16"]
    code, _, err = run(["train", *TINY, *over, f"run.root={tmp_path}", "run.name=r"], capsys)
    assert code == 0, err
    code, _, err = run(["train", "--resume", tmp_path / "r", "model.n_codes=32", "train.max_steps=4"], capsys)
    assert code == 2 and "n_codes=16" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = run(["train", "--resume", tmp_path / "r", "train.max_steps=3"], capsys)
    assert code == 0 and "finished after 3 steps" in out, err


def test_broken_pipe_exits_quietly(monkeypatch, capsys):
    """`ndvq doctor run | head`: the reader closing the pipe is not an error."""
    import ndvq.cli as cli

    def raise_broken_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    parser = cli.build_parser()
    real_parse = parser.parse_args
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: (ns := real_parse(argv), setattr(ns, "func", raise_broken_pipe))[0])
    assert cli.main(["doctor", "some-run"]) == 0
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- exit codes


def _raising(monkeypatch, exc: BaseException):
    """Make `ndvq doctor x` raise ``exc`` from its handler."""
    import ndvq.cli as cli

    def handler(args):
        raise exc

    parser = cli.build_parser()
    real_parse = parser.parse_args
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: (ns := real_parse(argv), setattr(ns, "func", handler))[0])
    return cli


@pytest.mark.parametrize("exc, code, line", [
    (__import__("ndvq.errors").errors.DataError("data.root 'x' is empty"), 2, "ndvq: error: data.root 'x' is empty"),
    (FileNotFoundError(2, "No such file or directory", "/nope"), 2, "ndvq: error: [Errno 2] No such file or directory: '/nope'"),
    (PermissionError(13, "Permission denied", "/root/x"), 2, "ndvq: error: [Errno 13] Permission denied: '/root/x'"),
    (__import__("ndvq.errors").errors.NonFiniteLossError("50 non-finite steps in a row"), 1, "ndvq: 50 non-finite steps in a row"),
    (KeyboardInterrupt(), 130, "ndvq: interrupted"),
])
def test_user_errors_are_one_line(monkeypatch, capsys, exc, code, line):
    cli = _raising(monkeypatch, exc)
    assert cli.main(["doctor", "x"]) == code
    assert capsys.readouterr().err.strip().splitlines() == [line]


@pytest.mark.parametrize("exc", [TypeError("f() got an unexpected keyword argument 'x'"), ImportError("no module y"),
                                 ValueError("a bug"), KeyError("k")])
def test_anything_else_is_a_bug_with_its_traceback(monkeypatch, capsys, exc):
    cli = _raising(monkeypatch, exc)
    assert cli.main(["doctor", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and type(exc).__name__ in err
    assert err.strip().splitlines()[-1] == ("ndvq: internal error (this is a bug in ndvq; please report it with the "
                                            "traceback above)")


def test_a_user_error_in_a_ddp_worker_is_one_line(monkeypatch, capsys):
    ProcessRaisedException = type("ProcessRaisedException", (Exception,), {})
    text = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n  File \"x.py\", "
            "line 1, in f\nndvq.errors.DataError: the 'train' split is empty\n")
    cli = _raising(monkeypatch, ProcessRaisedException(text))
    assert cli.main(["doctor", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["ndvq: error: ndvq.errors.DataError: the 'train' split is empty"]
    cli = _raising(monkeypatch, ProcessRaisedException(text.replace("ndvq.errors.DataError", "TypeError")))
    assert cli.main(["doctor", "x"]) == 1
    assert "internal error" in capsys.readouterr().err
