"""flmn_np.data (files, images, omniglot, mnist, splits, cli): real-data counts and polarity,
caching, downloads, splits, and DataError on bad files.

Real-data tests take the data directory from the conftest fixtures (the package's resolver:
--data-dir, else FLMN_DATA_DIR, else ./data) and skip when the files are absent. The rest run on
small synthetic zips and idx files made in tmp_path.
"""
import gzip
import io
import os
import re
import subprocess
import sys
import urllib.error
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from flmn_np.data import cli, files, mnist, omniglot, sources, splits
from flmn_np.data.files import DataError
from flmn_np.data.images import downscale, resize_matrix


@pytest.fixture(scope="session")
def real_omniglot(data_dir):
    """The real Omniglot, loaded once per session (the first run builds the cache)."""
    return omniglot.load_omniglot(data_dir, download=False)


# ----------------------------------------------------------------------------- real data

def test_omniglot_counts_shapes_names(real_omniglot):
    og = real_omniglot
    assert og.images.shape == (1623, 20, 400)
    assert og.images.dtype == np.float32
    assert og.n_background == 964
    assert len(og.names) == 1623
    assert all(re.fullmatch(r"[^/]+/character\d\d", n) for n in og.names)
    assert og.names[963].split("/")[0] != og.names[964].split("/")[0]  # background | evaluation


def test_omniglot_polarity_and_range(real_omniglot):
    x = real_omniglot.images
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.mean() < 0.2                                   # ink is the minority, and ink = 1
    assert (x < 0.05).mean() > 0.5                          # background mostly 0
    assert x.reshape(1623, 20, 20, 20)[..., 0, :].mean() < 0.02   # top rows are background
    assert (x.max(axis=-1) > 0.25).all()                    # every image has ink (some are single dots)


def test_omniglot_matches_pillow_resize_of_the_png(real_omniglot, data_dir):
    with zipfile.ZipFile(data_dir / "omniglot" / "images_evaluation.zip") as zf:
        member = next(n for n in zf.namelist() if n.endswith("1000_07.png"))
        im = Image.open(io.BytesIO(zf.read(member)))
        ink = Image.fromarray((~np.asarray(im)).astype(np.float32), mode="F")
    small = np.clip(np.asarray(ink.resize((20, 20), Image.Resampling.LANCZOS)), 0, 1).reshape(-1)
    np.testing.assert_allclose(real_omniglot.images[999, 6], small, atol=1e-5)


def test_a_second_load_reads_the_cache_not_the_zips(real_omniglot, data_dir, monkeypatch):
    """Once cached, loading decodes no PNG (the decoder would raise) and gives the same arrays."""
    def no_decoding(*args):
        raise AssertionError("the zips were decoded again")
    monkeypatch.setattr(omniglot, "decode_omniglot_zip", no_decoding)
    again = omniglot.load_omniglot(data_dir, download=False)
    np.testing.assert_array_equal(again.images, real_omniglot.images)
    cache = files.cache_dir_for(data_dir)
    if not files._is_writable(data_dir):
        assert data_dir.resolve() not in cache.resolve().parents
    assert list(cache.glob("omniglot_20x20_*.npz"))


def test_full_resolution_images_downscale_to_the_plain_ones(real_omniglot, data_dir):
    full = omniglot.load_omniglot_full(data_dir, download=False)
    assert full.shape == (1623, 20, 105, 105) and full.dtype == bool
    assert 0.02 < full.mean() < 0.2
    for c, d in [(0, 0), (964, 19), (1622, 5)]:
        np.testing.assert_allclose(downscale(full[c, d]), real_omniglot.images[c, d], atol=1e-6)


def test_mini_mnist_shape_range_polarity_and_seed(mnist_dir):
    m = mnist.load_mini_mnist(mnist_dir, download=False)
    assert m.shape == (10, 20, 400) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() <= 1 and 0.05 < m.mean() < 0.3
    np.testing.assert_array_equal(m, mnist.load_mini_mnist(mnist_dir, seed=0, download=False))
    assert not np.array_equal(m, mnist.load_mini_mnist(mnist_dir, seed=1, download=False))


def test_mnist_test_set_counts(mnist_dir):
    images, labels = mnist.load_mnist_test(mnist_dir, download=False)
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_check_command_verifies_real_files(data_dir, mnist_dir, capsys):
    assert cli.main(["check", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "964 characters, 19280 images" in out and "659 characters, 13180 images" in out


# ----------------------------------------------------------------------------- synthetic Omniglot

SMALL_PARTS = (("images_background", 1, 3), ("images_evaluation", 4, 5))


def _png(ink_rows):
    """A 105x105 mode-'1' PNG, white background, black ink on the given rows (cols 40-60)."""
    a = np.ones((105, 105), dtype=bool)
    for r in ink_rows:
        a[r, 40:61] = False
    buf = io.BytesIO()
    Image.fromarray(a).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _write_zip(path, stem, ids, drawers=range(1, 21), corrupt=None):
    """An Omniglot-layout zip; character id cid has ink on row 10 + cid and drawer d on row 60 + d."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for cid in ids:
            for d in drawers:
                name = f"{stem}/Alpha{cid % 2}/character{cid:02d}/{cid:04d}_{d:02d}.png"
                zf.writestr(name, b"not a png" if name.endswith(corrupt or "-") else _png([10 + cid, 60 + d]))


@pytest.fixture
def fake_omniglot(tmp_path, monkeypatch):
    """A data dir with two tiny Omniglot zips (3 + 2 characters x 20 drawers)."""
    monkeypatch.setattr(omniglot, "OMNIGLOT_PARTS", SMALL_PARTS)
    monkeypatch.setenv("FLMN_CACHE_DIR", str(tmp_path / "user_cache"))
    root = tmp_path / "data"
    for stem, first, last in SMALL_PARTS:
        _write_zip(root / "omniglot" / f"{stem}.zip", stem, range(first, last + 1))
    return root


def test_fake_omniglot_loads_with_ids_drawers_and_polarity(fake_omniglot):
    og = omniglot.load_omniglot(fake_omniglot)
    assert og.images.shape == (5, 20, 400) and og.n_background == 3
    assert og.names == ["Alpha1/character01", "Alpha0/character02", "Alpha1/character03",
                        "Alpha0/character04", "Alpha1/character05"]
    full = omniglot.load_omniglot_full(fake_omniglot)
    assert full.shape == (5, 20, 105, 105)
    for c, d in [(0, 0), (4, 19), (2, 7)]:
        assert set(np.flatnonzero(full[c, d].any(axis=1))) == {11 + c, 61 + d}   # class c = id c+1
    small = og.images.reshape(5, 20, 20, 20)
    assert set(np.argsort(small[0, 0].mean(axis=1))[-2:]) == {2, 11}      # ink = 1 on rows 11, 61 / 5.25
    assert og.images.max() > 0.15 and og.images.mean() < 0.05            # background = 0


def test_cache_written_in_writable_data_dir_and_reused(fake_omniglot, monkeypatch):
    first = omniglot.load_omniglot(fake_omniglot)
    assert len(list((fake_omniglot / ".cache").glob("*.npz"))) == 2
    monkeypatch.setattr(omniglot, "decode_omniglot_zip", lambda *a: pytest.fail("cache not used"))
    np.testing.assert_array_equal(omniglot.load_omniglot(fake_omniglot).images, first.images)
    assert omniglot.load_omniglot_full(fake_omniglot).shape == (5, 20, 105, 105)


def test_cache_goes_to_fallback_when_data_dir_readonly(fake_omniglot, tmp_path, monkeypatch):
    monkeypatch.delenv("FLMN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    os.chmod(fake_omniglot, 0o555)
    try:
        omniglot.load_omniglot(fake_omniglot)
        assert not (fake_omniglot / ".cache").exists()
        assert len(list((tmp_path / "xdg" / "flmn_np").glob("omniglot_*.npz"))) == 2
    finally:
        os.chmod(fake_omniglot, 0o755)


def test_cache_dir_argument_wins(fake_omniglot, tmp_path):
    omniglot.load_omniglot(fake_omniglot, cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine").glob("*.npz"))) == 2


def test_damaged_cache_is_rebuilt(fake_omniglot):
    first = omniglot.load_omniglot(fake_omniglot)
    for f in (fake_omniglot / ".cache").glob("*.npz"):
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = omniglot.load_omniglot(fake_omniglot)
    np.testing.assert_array_equal(again.images, first.images)


@pytest.mark.parametrize("damage", [
    lambda c: {**c, "images": c["images"][..., :399]},                  # 399 values per image
    lambda c: {**c, "images": c["images"][:4], "names": c["names"][:4]},  # a class short
    lambda c: {**c, "images": c["images"].astype(np.float64)},
    lambda c: {**c, "images": c["images"] * 255},
    lambda c: {**c, "n_background": np.array(4)},
])
def test_a_cache_that_loads_but_holds_other_arrays_is_rebuilt(fake_omniglot, damage):
    """A cache with 399 values per image loaded and training ended in a matmul ValueError."""
    first = omniglot.load_omniglot(fake_omniglot)
    small = next((fake_omniglot / ".cache").glob("omniglot_20x20_*.npz"))
    with np.load(small) as z:
        np.savez(small, **damage({k: z[k] for k in z.files}))
    with pytest.warns(UserWarning, match="damaged cache"):
        again = omniglot.load_omniglot(fake_omniglot)
    np.testing.assert_array_equal(again.images, first.images)
    assert again.n_background == 3


def test_a_full_cache_of_another_shape_is_rebuilt(fake_omniglot):
    full = omniglot.load_omniglot_full(fake_omniglot)
    packed = next(p for p in (fake_omniglot / ".cache").glob("*.npz")
                  if "omniglot_20x20_" not in p.name)
    np.savez(packed, packed=np.zeros((5, 20, 100), np.uint8))
    with pytest.warns(UserWarning, match="damaged cache"):
        np.testing.assert_array_equal(omniglot.load_omniglot_full(fake_omniglot), full)


def test_changed_zip_gets_a_new_cache_key(fake_omniglot):
    omniglot.load_omniglot(fake_omniglot)
    _write_zip(fake_omniglot / "omniglot" / "images_evaluation.zip", "images_evaluation", [5, 4])
    omniglot.load_omniglot(fake_omniglot)
    assert len(list((fake_omniglot / ".cache").glob("omniglot_20x20_*.npz"))) == 2


def _assert_one_line(err, *fragments):
    msg = str(err.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg


def test_truncated_zip_raises_dataerror_naming_file(fake_omniglot):
    path = fake_omniglot / "omniglot" / "images_background.zip"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError) as err:
        omniglot.load_omniglot(fake_omniglot)
    _assert_one_line(err, "images_background.zip", "truncated or corrupt")


def test_wrong_character_count_raises_dataerror(fake_omniglot):
    _write_zip(fake_omniglot / "omniglot" / "images_evaluation.zip", "images_evaluation", [4])
    with pytest.raises(DataError) as err:
        omniglot.load_omniglot(fake_omniglot)
    _assert_one_line(err, "images_evaluation.zip", "has 1 characters, expected 2")


def test_missing_drawer_raises_dataerror(fake_omniglot):
    _write_zip(fake_omniglot / "omniglot" / "images_background.zip", "images_background",
               [1, 2, 3], drawers=range(1, 20))
    with pytest.raises(DataError) as err:
        omniglot.load_omniglot(fake_omniglot)
    _assert_one_line(err, "images_background.zip", "drawers")


def test_corrupt_png_raises_and_leaves_no_partial_cache(fake_omniglot):
    _write_zip(fake_omniglot / "omniglot" / "images_evaluation.zip", "images_evaluation", [4, 5],
               corrupt="0005_13.png")
    with pytest.raises(DataError) as err:
        omniglot.load_omniglot(fake_omniglot)
    _assert_one_line(err, "0005_13.png", "images_evaluation.zip")
    cache = fake_omniglot / ".cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_failed_cache_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "x.npz"

    def explode(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        files.atomic_write(target, explode)
    assert list(tmp_path.iterdir()) == []


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError) as err:
        omniglot.load_omniglot(tmp_path, download=False)
    _assert_one_line(err, "omniglot/images_background.zip", "omniglot/images_evaluation.zip",
                     str(tmp_path), "download=False")


def test_offline_download_fails_fast_with_instructions(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(files, "_urlopen", offline)
    with pytest.raises(DataError) as err:
        mnist.load_mini_mnist(tmp_path)
    assert len(calls) == 1 and calls[0][1] <= files.DOWNLOAD_TIMEOUT_S  # gives up after one failure
    _assert_one_line(err, "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz", "no network")


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_and_writes_atomically(mnist_dir, tmp_path, monkeypatch):
    real = (mnist_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    monkeypatch.setattr(files, "_urlopen", lambda url, timeout: _FakeResponse(real))
    (path,) = files.require_files(tmp_path, ["t10k-labels-idx1-ubyte.gz"], download=True)
    assert path == tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert path.read_bytes() == real
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_download_with_wrong_checksum_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_urlopen", lambda url, timeout: _FakeResponse(b"some html error page"))
    with pytest.raises(DataError) as err:
        files.require_files(tmp_path, ["t10k-labels-idx1-ubyte.gz"], download=True)
    _assert_one_line(err, "checksum mismatch", "t10k-labels-idx1-ubyte.gz")
    assert not list(tmp_path.rglob("*.gz")) and not list(tmp_path.rglob("*.tmp"))


def test_download_into_readonly_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_urlopen", lambda url, timeout: pytest.fail("should not download"))
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(DataError) as err:
            files.require_files(tmp_path, ["t10k-labels-idx1-ubyte.gz"], download=True)
    finally:
        os.chmod(tmp_path, 0o755)
    _assert_one_line(err, "read-only")


# ----------------------------------------------------------------------------- synthetic MNIST

def _write_idx(path, magic, dims, payload, compress=True):
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def fake_mnist(tmp_path):
    """A data dir whose MNIST test set has 3 images per digit: digit d drawn as a bar at row 2d+4."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), 3)
    images = np.zeros((30, 28, 28), dtype=np.uint8)
    for i, d in enumerate(labels):
        images[i, 2 * d + 4, 4:24] = 255
    _write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", 2051, (30, 28, 28), images.tobytes())
    _write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", 2049, (30,), labels.tobytes())
    return tmp_path


def test_fake_mini_mnist(fake_mnist):
    m = mnist.load_mini_mnist(fake_mnist, per_digit=2, seed=0, download=False)
    assert m.shape == (10, 2, 400) and m.dtype == np.float32
    rows = m.reshape(10, 2, 20, 20).mean(axis=(1, 3)).argmax(axis=1)       # the bar's row per digit
    assert (np.diff(rows) > 0).all()                                      # digit d in row d
    with pytest.raises(DataError, match="need 4"):
        mnist.load_mini_mnist(fake_mnist, per_digit=4, download=False)


def test_truncated_idx_raises(fake_mnist):
    path = fake_mnist / "mnist" / "t10k-images-idx3-ubyte.gz"
    _write_idx(path, 2051, (30, 28, 28), bytes(100))
    with pytest.raises(DataError) as err:
        mnist.load_mini_mnist(fake_mnist, per_digit=2, download=False)
    _assert_one_line(err, "t10k-images-idx3-ubyte.gz", "truncated")


def test_bad_magic_and_not_gzip_and_cut_gzip_raise(fake_mnist):
    path = fake_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz"
    _write_idx(path, 1234, (30,), bytes(30))
    with pytest.raises(DataError, match="magic number 1234"):
        mnist.read_idx(path)
    _write_idx(path, 2049, (30,), bytes(30), compress=False)
    with pytest.raises(DataError, match="not a readable gzip"):
        mnist.read_idx(path)
    _write_idx(path, 2049, (30,), bytes(30))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError) as err:
        mnist.read_idx(path)
    _assert_one_line(err, str(path))


# ----------------------------------------------------------------------------- episode sources

def test_omniglot_data_gives_the_experiments_images_and_augmentation(fake_omniglot):
    plain, aug = sources.omniglot_data(SimpleNamespace(experiment=1, rotations90=False), fake_omniglot)
    assert plain.shape == (5, 20, 400) and aug == {"full_images": None, "augment": False}
    turned, aug = sources.omniglot_data(SimpleNamespace(experiment=2, rotations90=True), fake_omniglot)
    assert turned.shape == (20, 20, 400) and aug["augment"]
    assert aug["full_images"].shape == (20, 20, 105, 105)
    np.testing.assert_array_equal(turned[:5], plain)                     # plain classes come first
    np.testing.assert_array_equal(aug["full_images"][5 + 2, 3], np.rot90(aug["full_images"][2, 3]))


def test_mnist_source_refuses_episodes_larger_than_mini_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "load_mini_mnist", lambda data_dir: np.zeros((10, 20, 400), np.float32))
    source = sources.mnist_source(SimpleNamespace(classes=5, samples=10), tmp_path)
    assert source.images.shape == (10, 20, 400) and source.class_ids.tolist() == list(range(10))
    with pytest.raises(DataError, match="need 12 classes of 10"):
        sources.mnist_source(SimpleNamespace(classes=12, samples=10), tmp_path)


# ----------------------------------------------------------------------------- splits, paths, resize

def test_paper_split_disjoint_covering_reproducible():
    train, test = splits.paper_split(seed=3)
    assert train.size == 1209 and test.size == 414
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1623))
    again = splits.paper_split(seed=3)
    np.testing.assert_array_equal(again[0], train)
    assert not np.array_equal(splits.paper_split(seed=4)[0], train)


def test_background_and_make_split():
    train, test = splits.make_split("background", seed=0)
    np.testing.assert_array_equal(train, np.arange(964))
    np.testing.assert_array_equal(test, np.arange(964, 1623))
    np.testing.assert_array_equal(splits.make_split("paper", 7)[1], splits.paper_split(7)[1])
    with pytest.raises(ValueError, match="unknown split"):
        splits.make_split("random", 0)


def test_resolve_data_dir_precedence(monkeypatch):
    monkeypatch.delenv("FLMN_DATA_DIR", raising=False)
    assert files.resolve_data_dir(None) == Path("data")
    monkeypatch.setenv("FLMN_DATA_DIR", "/somewhere")
    assert files.resolve_data_dir(None) == Path("/somewhere")
    assert files.resolve_data_dir("here") == Path("here")


def test_resize_matrix_reproduces_pillow():
    img = (np.random.default_rng(0).random((105, 105)) < 0.1).astype(np.float32)
    pil = np.asarray(Image.fromarray(img, mode="F").resize((20, 20), Image.Resampling.LANCZOS))
    A = resize_matrix(105, 20)
    np.testing.assert_allclose(A @ img @ A.T, pil, atol=1e-6)
    np.testing.assert_allclose(A.sum(axis=1), 1.0, atol=1e-6)
    small = downscale(np.stack([img, img]))
    assert small.shape == (2, 400) and small.min() >= 0 and small.max() <= 1


# ----------------------------------------------------------------------------- CLI

def test_check_reports_missing_files(tmp_path, capsys):
    assert cli.main(["check", "--data-dir", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().out


@pytest.mark.parametrize("augment", [False, True])
def test_show_writes_a_png(fake_omniglot, tmp_path, augment):
    out = tmp_path / "episode.png"
    args = ["show", "--out", str(out), "--data-dir", str(fake_omniglot), "--classes", "3",
            "--samples", "2", "--no-download"] + (["--augment"] if augment else [])
    assert cli.main(args) == 0
    assert Image.open(out).size[0] > 100


def test_show_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["show", "--out", "x.png", "--dataset", "cifar"])
    with pytest.raises(SystemExit):
        cli.main(["show", "--out", "x.png", "--dataset", "mnist", "--augment"])


@pytest.mark.parametrize("flags,says", [
    (["--classes", "99999"], "needs more"), (["--samples", "21"], "needs more"),
    (["--dataset", "mnist", "--classes", "11"], "needs more"),
    (["--out", "no-such-folder/episode.png"], "cannot write"), (["--out", "episode.xyz"], "cannot write")])
def test_show_refuses_what_it_cannot_draw_in_one_line(data_dir, tmp_path, monkeypatch, capsys, flags, says):
    """Episode sizes the data cannot supply and files that cannot be written: exit 2, one line."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["show", "--out", "episode.png", "--data-dir", str(data_dir), "--no-download", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("data: error: ") and says in err and err.count("\n") == 1, err


def test_the_data_command_ends_as_every_command_in_one_line(tmp_path):
    """`python -m flmn_np.data` goes through cli.run_command: `data: error: ...`, exit 2, and
    the common flag types."""
    repo = Path(cli.__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1",
           "HOME": str(tmp_path)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "flmn_np.data", *args], cwd=tmp_path,
                                       capture_output=True, text=True, env=env)
    proc = run("show", "--out", "e.png", "--data-dir", str(tmp_path), "--no-download")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("data: error: missing data file(s) under ") and \
        proc.stderr.count("\n") == 1, proc.stderr
    proc = run("show", "--out", "e.png", "--classes", "0")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].endswith(
        "error: argument --classes: must be an integer >= 1, got 0"), proc.stderr
