"""``key=value`` overrides are found at any position of a command line; paths and option values stay."""

from ndvq.run.argv import is_override, split_overrides


def test_overrides_anywhere_and_paths_untouched():
    argv = ["eval", "runs/a", "data.channels=3", "--data", "d=1/x", "--split", "val", "model.videogpt.n_hiddens=8",
            "./a.b=c", "/abs/x.y=z"]
    rest, over = split_overrides(argv)
    assert over == ["data.channels=3", "model.videogpt.n_hiddens=8"]
    assert rest == ["eval", "runs/a", "--data", "d=1/x", "--split", "val", "./a.b=c", "/abs/x.y=z"]


def test_double_dash_stops_and_bare_keys_are_not_overrides():
    assert split_overrides(["train", "--", "data.root=x"]) == (["train", "--", "data.root=x"], [])
    assert not is_override("root=x") and not is_override("--out=x.npz") and is_override("train.max_steps=5")
