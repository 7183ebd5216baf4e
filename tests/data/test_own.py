"""Your own data (scnf.data.own): an .npz of arrays or a folder of images, any image size the
builders take, with the checksum of what was read recorded in the run directory."""
import hashlib
import json

import numpy as np
import pytest
import torch

from scnf.config import ConfigError, from_dict
from scnf.data.own import load_image_folder, load_npz


def _blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 2)) * 0.3 + np.where(y[:, None] == 1, 2.0, -2.0)).astype(np.float32)
    y_semi = np.full(n, -1)
    y_semi[:6] = y[:6]
    return x, y, y_semi


def _images(n, shape=(32, 32, 3), seed=0):
    """uint8 images whose class (0 or 1) sets the brightness of the left or right half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
    w = shape[1]
    for i, k in enumerate(y):
        x[i, :, (w // 2) * k:(w // 2) * (k + 1)] += 150
    return x, y


def _train(cfg_raw, out):
    from scnf.runs.run import run

    return run(from_dict(cfg_raw), out)


_TINY_FLOW = {"hidden": 4, "blocks": 1, "h_hidden": 8, "h_blocks": 1}
_SHORT = {"steps": 2, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2, "progress": False}


def test_npz_vectors_train_and_the_run_records_the_file_checksum(tmp_path):
    x, y, y_semi = _blobs()
    xt, yt, _ = _blobs(20, seed=1)
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y_semi, x_test=xt, y_test=yt)
    m = _train({"data": {"dataset": "npz", "path": str(path)}, "train": _SHORT}, tmp_path / "run")
    assert 0 <= m["error_pct"] <= 100 and np.isfinite(m["nll"])
    rec = json.loads((tmp_path / "run" / "data.json").read_text())
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (rec["rows"], rec["labelled"], rec["test_rows"], rec["shape"], rec["images"]) == (60, 6, 20, [2], False)
    assert (tmp_path / "run" / "decision_boundary.png").exists()
    assert "sha256" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npz_colour_images_32x32_train_the_image_flow_and_m2(tmp_path, layout, capsys):
    x, y = _images(40)
    xt, yt = _images(10, seed=1)
    if layout == "NCHW":
        x, xt = x.transpose(0, 3, 1, 2), xt.transpose(0, 3, 1, 2)
    y_semi = np.where(np.arange(40) < 8, y, -1)
    path = tmp_path / "img.npz"
    np.savez(path, x=x, y=y_semi, x_test=xt, y_test=yt)
    own = load_npz(path)
    assert own.images and own.x.shape == (40, 3, 32, 32) and own.x_test.shape == (10, 3, 32, 32)
    assert np.array_equal(own.x[0], (x[0] if layout == "NCHW" else x[0].transpose(2, 0, 1)))
    m = _train({"data": {"dataset": "npz", "path": str(path), "n_validation": 2}, "model": _TINY_FLOW,
                "train": _SHORT}, tmp_path / "flow")
    assert np.isfinite(m["bits_per_dim"]) and 0 <= m["error_pct"] <= 100 and "val_error_pct" in m
    from scnf.runs.run import load_run

    _, model, data, _ = load_run(tmp_path / "flow")
    assert model.input_shape == (3, 32, 32) and model.deep_dim == 3 * 32 * 32 // 4
    assert data.x_val.shape[0] == 2 and data.x.shape[0] == 38
    from scnf.cli import main

    capsys.readouterr()
    assert main(["analyse", str(tmp_path / "flow"), "samples"]) == 2  # the figures draw one channel
    err = capsys.readouterr().err.strip()
    assert "3x32x32" in err and len(err.splitlines()) == 1
    m2 = _train({"data": {"dataset": "npz", "path": str(path)}, "model": {"kind": "m2", "m2_hidden": 8, "m2_latent": 2},
                 "train": {**_SHORT, "alpha": 0.1, "optimizer": "adam"}}, tmp_path / "m2")
    assert np.isfinite(m2["bits_per_dim_binarised"])


def _write_folder(root, colour_of=lambda cls, i: True, size=lambda cls, i: (32, 32)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in (("train", ("cat", "dog", "unlabelled")), ("test", ("cat", "dog"))):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(3 if split == "test" else 5):
                w, h = size(cls, i)
                a = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
                img = Image.fromarray(a) if colour_of(cls, i) else Image.fromarray(a[..., 0])
                img.save(root / split / cls / f"{i}.png")


def test_image_folder_reads_classes_unlabelled_and_test_images(tmp_path):
    _write_folder(tmp_path / "d", colour_of=lambda cls, i: not (cls == "dog" and i == 0))  # one grayscale: read as colour
    own = load_image_folder(tmp_path / "d")
    assert own.x.shape == (15, 3, 32, 32) and own.x_test.shape == (6, 3, 32, 32)
    assert sorted(np.unique(own.y).tolist()) == [-1, 0, 1] and (own.y == -1).sum() == 5
    assert own.source["classes"] == ["cat", "dog"] and own.source["files"] == 21
    from PIL import Image

    with Image.open(tmp_path / "d" / "train" / "cat" / "0.png") as im:
        first = np.asarray(im).transpose(2, 0, 1)
    assert np.array_equal(own.x[0], first)  # train/cat/0.png, channels first
    again = load_image_folder(tmp_path / "d").source["sha256"]
    assert again == own.source["sha256"]
    (tmp_path / "d" / "train" / "cat" / "0.png").write_bytes((tmp_path / "d" / "train" / "cat" / "1.png").read_bytes())
    assert load_image_folder(tmp_path / "d").source["sha256"] != own.source["sha256"]  # the content counts


def test_image_folder_trains_grayscale_images_of_another_size(tmp_path):
    _write_folder(tmp_path / "d", colour_of=lambda cls, i: False, size=lambda cls, i: (20, 16))  # W 20, H 16
    m = _train({"data": {"dataset": "folder", "path": str(tmp_path / "d")}, "model": _TINY_FLOW,
                "train": _SHORT}, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "data.json").read_text())["shape"] == [1, 16, 20]
    from PIL import Image
    from scnf.runs.run import load_run

    _, model, data, _ = load_run(tmp_path / "run")
    assert model.input_shape == (1, 16, 20) and model.deep_dim == 16 * 20 // 4 and data.dims == 320
    with Image.open(tmp_path / "d" / "train" / "cat" / "0.png") as im:
        assert np.array_equal(data.x[0, 0].numpy(), np.asarray(im))  # rows H = 16, columns W = 20
    # bits/dim is the test NLL over D = 1 x 16 x 20 pixels: 8 - mean log p / (320 ln 2)
    assert m["bits_per_dim"] == pytest.approx(8.0 + m["nll"] / (320 * np.log(2.0)), rel=1e-12)


@pytest.mark.parametrize("problem, match", [
    ("size", "every image must have the same size"),
    ("test-class", "has no folder in train"),
    ("no-train", "no train/ folder"),
    ("not-image", "not a readable image"),
])
def test_image_folder_problems_name_the_file(tmp_path, problem, match):
    root = tmp_path / "d"
    if problem != "no-train":
        _write_folder(root, size=(lambda cls, i: (32, 28) if (cls, i) == ("dog", 2) else (32, 32))
                      if problem == "size" else (lambda cls, i: (32, 32)))
    else:
        root.mkdir()
    if problem == "test-class":
        (root / "test" / "bird").mkdir()
    if problem == "not-image":
        (root / "train" / "cat" / "9.png").write_text("hello")
    with pytest.raises(ValueError, match=match):
        load_image_folder(root)


@pytest.mark.parametrize("arrays, match", [
    (dict(x=np.zeros((4, 2), np.float32)), "no array 'y'"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, -2, -1])), "label -2"),
    (dict(x=np.zeros((4, 2)), y=np.full(4, -1)), "no labelled row"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, -1])), "expected 4 labels"),
    (dict(x=np.zeros((4, 8, 8)), y=np.zeros(4, int)), "must be uint8"),
    (dict(x=np.array([[0.0, np.nan]] * 4), y=np.zeros(4, int)), "NaN"),
    (dict(x=np.zeros((4, 2)), y=np.array([0.5, 1, 0, 1])), "integers"),
    (dict(x=np.zeros((4, 2)), y=np.zeros(4, int), x_test=np.zeros((2, 2))), "come together"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 0, -1, -1]), x_test=np.zeros((2, 2)), y_test=np.array([0, 1])),
     "no labelled training row"),
    (dict(x=np.zeros((4, 9, 9, 9), np.uint8), y=np.zeros(4, int)), "channel axis"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 3)), y_test=np.array([0, 1])),
     r"bad\.npz: x_test rows have shape \(3,\), x rows \(2,\)$"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, -1, -1]), x_test=np.zeros((2, 2)), y_test=np.array([0, -1])),
     r"bad\.npz: y_test: label -1: labels are 0, 1, \.\.\., K-1$"),  # a test row needs its label
])
def test_npz_problems_are_value_errors_naming_the_array(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_npz(path)


def test_npz_with_objects_is_refused_without_running_code(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([object()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(ValueError, match="not a readable .npz of plain arrays"):
        load_npz(path)


def test_image_shapes_the_builder_cannot_take_are_refused(tmp_path):
    from scnf.models.builders import image_scnf

    with pytest.raises(ValueError, match="divisible by 4"):
        image_scnf((3, 30, 32))
    x, y = _images(10, shape=(30, 30, 1))
    np.savez(tmp_path / "odd.npz", x=x, y=y)
    with pytest.raises(ValueError, match="divisible by 4"):
        _train({"data": {"dataset": "npz", "path": str(tmp_path / "odd.npz")}, "train": _SHORT}, tmp_path / "r")


@pytest.mark.parametrize("raw, match", [
    ({"data": {"dataset": "npz"}}, "needs data.path"),
    ({"data": {"dataset": "folder", "path": "x", "n_labelled": 100}}, "data.n_labelled"),
    ({"data": {"dataset": "mnist", "path": "x.npz"}}, "data.path"),
    ({"data": {"dataset": "folder", "path": "x"}, "train": {"input_noise": 0.1}}, "input_noise"),
])
def test_own_data_config_problems(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(raw)


def test_checks_that_need_the_data_wait_for_the_npz(tmp_path):
    """An npz may hold vectors or images: a VAE on vectors is refused once the file is read."""
    x, y, y_semi = _blobs()
    np.savez(tmp_path / "v.npz", x=x, y=y_semi)
    cfg = {"data": {"dataset": "npz", "path": str(tmp_path / "v.npz")}, "model": {"kind": "m2"}, "train": _SHORT}
    from_dict(cfg)  # not known yet
    with pytest.raises(ConfigError, match="image data only"):
        _train(cfg, tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_cli_bad_own_data_is_one_line_exit_2(tmp_path, capsys):
    from scnf.cli import main

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "bad.npz"}"\n[train]\nsteps = 2\nprogress = false\n')
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npz" in err and len(err.splitlines()) == 1


def test_unchanged_mnist_builder_is_the_image_builder_at_1x28x28():
    from scnf.models.builders import image_scnf, mnist_scnf

    torch.manual_seed(0)
    a = mnist_scnf(hidden=4, blocks=1, h_hidden=8, h_blocks=1)
    torch.manual_seed(0)
    b = image_scnf((1, 28, 28), hidden=4, blocks=1, h_hidden=8, h_blocks=1)
    assert a.deep_dim == b.deep_dim == 196
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ errors name what the user named
def test_an_empty_class_folder_is_named_not_its_index(tmp_path):
    """Not "class(es) [0] have no labelled row": the folder train/bird/ is named."""
    from scnf.data.load import build_data

    _write_folder(tmp_path / "d")
    (tmp_path / "d" / "train" / "bird").mkdir()  # sorted first: class index 0
    with pytest.raises(ValueError, match=r"no labelled row of class 'bird' \(train/bird/\)") as e:
        build_data(from_dict({"data": {"dataset": "folder", "path": str(tmp_path / "d")}}))
    assert "[0]" not in str(e.value) and str(tmp_path / "d") in str(e.value)


def test_a_label_without_labelled_rows_and_a_class_emptied_by_validation_are_named(tmp_path):
    from scnf.data.load import build_data

    x, _, _ = _blobs()
    y = np.full(60, -1)
    y[:4] = [0, 0, 2, 2]  # no labelled row of class 1
    np.savez(tmp_path / "gap.npz", x=x, y=y)
    with pytest.raises(ValueError, match=r"gap\.npz: no labelled row of class 1; every class \(labels 0, 1, \.\.\., 2\)"):
        build_data(from_dict({"data": {"dataset": "npz", "path": str(tmp_path / "gap.npz")}}))
    y[:4] = [0, 0, 0, 1]  # one labelled row of class 1, which validation may take
    np.savez(tmp_path / "one.npz", x=x, y=y)
    msgs = set()
    for seed in range(8):
        try:
            build_data(from_dict({"data": {"dataset": "npz", "path": str(tmp_path / "one.npz"), "n_validation": 2,
                                           "split_seed": seed}}))
        except ValueError as e:
            msgs.add(str(e))
    assert msgs and all("holds out every labelled row of class 1 (1 in" in m and "one.npz" in m for m in msgs), msgs


@pytest.mark.parametrize("content, what", [
    (b"1.0,2.0,0\n3.0,4.0,1\n", "a text file"),
    (b"\x93NUMPY\x01\x00v\x00", "a .npy file"),
    (b"\x80\x04\x95\x10\x00\x00\x00", "a Python pickle"),
    (b"", "an empty file"),
])
def test_a_file_that_is_not_an_npz_says_what_it_is_without_advising_to_load_it_unsafely(tmp_path, content, what):
    path = tmp_path / "mine.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_npz(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {what}") and "np.savez" in msg
    assert "allow_pickle" not in msg and "unsafe" not in msg and len(msg.splitlines()) == 1


def test_a_folder_that_is_not_there_is_not_said_to_lack_train(tmp_path):
    with pytest.raises(ValueError, match=r"^data.path: no such folder: .*gray$"):
        load_image_folder(tmp_path / "gray")
