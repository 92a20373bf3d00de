"""MNIST loading: IDX parsing and its errors, the bundled sample, and tfds without network.

Nothing here downloads: every tfds test either has its data prepared locally from a few
made-up digits, or has ``download_and_prepare`` replaced by a failure.
"""

import gzip
import socket
import threading
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

from attacks import mnist

EXPECTED_SPEC = (tf.TensorSpec((28, 28, 1), tf.float32), tf.TensorSpec((), tf.int32))


def idx_bytes(array, *, dtype_byte=0x08, ndim=None):
    array = np.asarray(array, dtype=np.uint8)
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, dtype_byte, ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_split(folder, split, images, labels, *, gz=True, dot_names=False):
    """Writes MNIST-named IDX files; returns (images_path, labels_path)."""
    names = [mnist.idx_file_names(split, kind)[(2 if dot_names else 0) + (1 if gz else 0)]
             for kind in ("images", "labels")]
    paths = [folder / name for name in names]
    for path, array in zip(paths, (images, labels)):
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
    return paths


def digits(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


@pytest.fixture
def no_download(monkeypatch):
    """Makes any attempt by tfds to download and prepare MNIST fail the test."""
    import tensorflow_datasets as tfds

    def refuse(*args, **kwargs):
        raise AssertionError("the test suite must never download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


@pytest.fixture
def empty_tfds_dir(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return tmp_path / "tfds"


# --- read_idx ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("array", [digits(5)[0], digits(7)[1]], ids=["images", "labels"])
def test_read_idx_round_trips(tmp_path, array, gz):
    data = idx_bytes(array)
    path = tmp_path / "file"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = mnist.read_idx(path)
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_read_idx_tells_gzip_by_its_bytes_not_its_name(tmp_path):
    images, _ = digits(3)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(idx_bytes(images))
    gz_named_raw = tmp_path / "gzipped-idx3-ubyte"
    gz_named_raw.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(mnist.read_idx(raw_named_gz), images)
    np.testing.assert_array_equal(mnist.read_idx(gz_named_raw), images)


IMAGES = digits(8)[0]
CORRUPT = {
    "bad magic": (b"\x12\x34" + idx_bytes(IMAGES)[2:], "not an IDX file: magic number 0x12340803"),
    "float dtype byte": (idx_bytes(IMAGES, dtype_byte=0x0D), "element type byte is 0x0d"),
    "two dimensions": (idx_bytes(IMAGES[0]), "header has 2 dimensions"),
    "empty": (b"", "0 bytes is too short for an IDX header"),
    "truncated header": (idx_bytes(IMAGES)[:10], "needs 16 bytes, but the file has 10"),
    "truncated pixels": (idx_bytes(IMAGES)[:16 + 6000],
                         "header says 8 x 28 x 28 = 6272 bytes of pixels, file has 6000"),
    "trailing bytes": (idx_bytes(IMAGES) + b"\0\0", "= 6272 bytes of pixels, file has 6274"),
    "truncated labels": (idx_bytes(np.arange(10))[:8 + 4],
                         "header says 10 = 10 bytes of labels, file has 4"),
    "truncated gzip": (gzip.compress(idx_bytes(IMAGES))[:-40], "gzip data is corrupt or truncated"),
    "garbled gzip": (b"\x1f\x8b" + bytes(range(60)), "gzip data is corrupt or truncated"),
    "no images": (idx_bytes(IMAGES[:0]), "holds 0 images"),
    "no labels": (idx_bytes(np.arange(0)), "holds 0 labels"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_read_idx_errors_name_the_file_and_the_problem(tmp_path, case):
    data, problem = CORRUPT[case]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(ValueError) as error:
        mnist.read_idx(path)
    assert str(error.value).startswith(f"{path}: ")
    assert problem in str(error.value)


# --- a folder of IDX files -------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dot_names", [False, True])
def test_read_mnist_dir_reads_both_splits(tmp_path, gz, dot_names):
    train, test = digits(12, seed=1), digits(4, seed=2)
    write_split(tmp_path, "train", *train, gz=gz, dot_names=dot_names)
    write_split(tmp_path, "test", *test, gz=gz, dot_names=dot_names)
    for split, (images, labels) in (("train", train), ("test", test)):
        got_images, got_labels = mnist.read_mnist_dir(tmp_path, split)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


def test_read_mnist_dir_lists_expected_names_when_a_file_is_missing(tmp_path):
    images_path, labels_path = write_split(tmp_path, "train", *digits(3))
    labels_path.unlink()
    with pytest.raises(FileNotFoundError) as error:
        mnist.read_mnist_dir(tmp_path, "train")
    message = str(error.value)
    assert str(tmp_path) in message and "no MNIST train labels file" in message
    for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz",
                 "train-labels.idx1-ubyte", "train-labels.idx1-ubyte.gz"):
        assert name in message


def test_read_mnist_dir_rejects_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.read_mnist_dir(tmp_path / "nowhere", "test")


def test_read_mnist_dir_rejects_count_mismatch(tmp_path):
    images, labels = digits(6)
    images_path, labels_path = write_split(tmp_path, "test", images, labels[:5])
    with pytest.raises(ValueError) as error:
        mnist.read_mnist_dir(tmp_path, "test")
    assert f"{images_path} has 6 images but {labels_path} has 5 labels" in str(error.value)


@pytest.mark.parametrize("gz", [False, True])
def test_a_split_of_zero_digits_fails_at_load_time_naming_the_file(tmp_path, gz):
    # Images and labels agree (0 and 0), so only the empty-file check stops this before an
    # experiment trains on nothing or divides by zero.
    images, labels = digits(0)
    images_path, _ = write_split(tmp_path, "train", images, labels, gz=gz)
    for load in (lambda: mnist.read_mnist_dir(tmp_path, "train"),
                 lambda: mnist.load_mnist_arrays("train", "idx", tmp_path),
                 lambda: mnist.load_mnist("train", "idx", tmp_path)):
        with pytest.raises(ValueError) as error:
            load()
        assert str(error.value) == (f"{images_path}: holds 0 images; an MNIST file must hold at "
                                    "least one")


def test_read_mnist_dir_rejects_labels_out_of_range(tmp_path):
    images, labels = digits(6)
    labels[3] = 12
    _, labels_path = write_split(tmp_path, "train", images, labels)
    with pytest.raises(ValueError) as error:
        mnist.read_mnist_dir(tmp_path, "train")
    assert str(error.value).startswith(f"{labels_path}: labels must be in 0..9")
    assert "the first is 12 at index 3" in str(error.value)


def test_read_mnist_dir_rejects_swapped_and_wrongly_sized_files(tmp_path):
    images, labels = digits(4)
    images_path, labels_path = write_split(tmp_path, "train", images, labels)
    images_path.write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(ValueError, match="expected an MNIST images file but this is a labels"):
        mnist.read_mnist_dir(tmp_path, "train")
    images_path.write_bytes(gzip.compress(idx_bytes(images[:, :27, :27])))
    with pytest.raises(ValueError, match="images are 28 x 28; this file's are 27 x 27"):
        mnist.read_mnist_dir(tmp_path, "train")


# --- the bundled sample ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    return {split: mnist.load_mnist_arrays(split, source="sample") for split in mnist.SPLITS}


@pytest.mark.parametrize("split,count", [("train", 8000), ("test", 2000)])
def test_sample_has_all_digits_scaled_to_unit_range(sample, split, count):
    images, labels = sample[split]
    assert images.shape == (count, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (count,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))


def test_sample_files_ship_with_a_credit():
    readme = (mnist.SAMPLE_DIR / "README.md").read_text()
    assert "LeCun" in readme and "Cortes" in readme and "Burges" in readme
    assert "Attribution-Share Alike 3.0" in readme


def test_load_mnist_sample_dataset_matches_arrays(sample):
    dataset = mnist.load_mnist("test", source="sample")
    assert dataset.element_spec == EXPECTED_SPEC
    assert int(dataset.cardinality()) == 2000
    images, labels = next(iter(dataset.batch(2000)))
    np.testing.assert_array_equal(images.numpy(), sample["test"][0])
    np.testing.assert_array_equal(labels.numpy(), sample["test"][1])


def test_load_mnist_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_tfds_download_problem", pytest.fail)  # "auto" must not probe
    images, labels = digits(5)
    write_split(tmp_path, "train", images, labels, gz=False)
    for source in ("auto", "idx"):
        dataset = mnist.load_mnist("train", source=source, data_dir=tmp_path)
        assert dataset.element_spec == EXPECTED_SPEC
        got_images, got_labels = next(iter(dataset.batch(5)))
        np.testing.assert_allclose(got_images.numpy()[..., 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(got_labels.numpy(), labels)
    assert mnist.resolve_mnist_source("auto", data_dir=tmp_path) == "idx"


@pytest.mark.parametrize("kwargs,message", [
    (dict(split="validation"), "split must be one of ('train', 'test'). "
                               "Received: split='validation'"),
    (dict(split="train", source="hub"), "source must be one of"),
    (dict(split="train", source="idx"), "source='idx' needs data_dir"),
    (dict(split="train", source="sample", data_dir="/tmp"), "data_dir is only read with"),
])
def test_bad_arguments_are_named(kwargs, message):
    for load in (mnist.load_mnist, mnist.load_mnist_arrays):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load(**kwargs)


# --- tensorflow-datasets without network -------------------------------------------------------


def test_tfds_without_network_fails_fast_and_says_what_to_do(empty_tfds_dir, monkeypatch):
    monkeypatch.setattr(mnist, "_tfds_download_problem", lambda: "simulated: no route")
    start = time.monotonic()
    with pytest.raises(ConnectionError) as error:
        mnist.load_mnist("train", source="tfds")
    assert time.monotonic() - start < 5
    message = str(error.value)
    for hint in (str(empty_tfds_dir), "simulated: no route", "source='sample'", "data_dir=",
                 "tfds build mnist"):
        assert hint in message
    with pytest.raises(ConnectionError):
        mnist.load_mnist_arrays("test", source="tfds")


def test_auto_without_network_falls_back_to_the_sample_loudly(empty_tfds_dir, monkeypatch):
    monkeypatch.setattr(mnist, "_tfds_download_problem", lambda: "simulated: no route")
    with pytest.warns(mnist.MnistFallbackWarning, match="bundled SAMPLE.*simulated: no route"):
        assert mnist.resolve_mnist_source("auto") == "sample"
    with pytest.warns(mnist.MnistFallbackWarning):
        dataset = mnist.load_mnist("test")
    assert int(dataset.cardinality()) == 2000


def test_auto_picks_tfds_when_the_download_host_answers(empty_tfds_dir, monkeypatch):
    monkeypatch.setattr(mnist, "_tfds_download_problem", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mnist.resolve_mnist_source("auto") == "tfds"


def test_real_probe_answers_within_its_bound():
    # This machine may or may not have network: either way the answer must come quickly.
    start = time.monotonic()
    problem = mnist._tfds_download_problem()
    assert time.monotonic() - start < mnist.PROBE_TIMEOUT_S + 2
    assert problem is None or "storage.googleapis.com" in problem or "did not answer" in problem


def test_real_offline_tfds_fails_and_auto_falls_back_within_seconds(empty_tfds_dir):
    if mnist._tfds_download_problem() is None:
        pytest.skip("the MNIST download host is reachable here, and tests never download")
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="source='sample'"):
        mnist.load_mnist("train", source="tfds")
    with pytest.warns(mnist.MnistFallbackWarning):
        assert mnist.resolve_mnist_source("auto") == "sample"
    assert time.monotonic() - start < 10


def test_probe_gives_up_on_a_hanging_lookup(monkeypatch):
    release = threading.Event()

    def hang(*args, **kwargs):  # like a DNS lookup that never answers
        release.wait(10)
        raise OSError("released by the test")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    try:
        problem = mnist._tfds_download_problem(timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - start < 1.5
    assert "did not answer within 0.3 s" in problem


def test_probe_goes_through_the_configured_proxy(monkeypatch):
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert mnist._tfds_download_address() == ("storage.googleapis.com", 443)
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert mnist._tfds_download_address() == ("proxy.invalid", 3128)
    monkeypatch.setenv("no_proxy", "storage.googleapis.com")
    assert mnist._tfds_download_address() == ("storage.googleapis.com", 443)


@pytest.fixture(scope="module")
def prepared_tfds_dir(tmp_path_factory):
    """tfds's own MNIST builder, run on 30 + 10 made-up digits from local files."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    source, data_dir = tmp_path_factory.mktemp("idx"), tmp_path_factory.mktemp("tfds")
    train_paths = write_split(source, "train", *digits(30, seed=3), gz=False)
    test_paths = write_split(source, "test", *digits(10, seed=4), gz=False)
    files = dict(zip(["train_data", "train_labels", "test_data", "test_labels"],
                     map(str, [*train_paths, *test_paths])))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds_mnist, "_TRAIN_EXAMPLES", 30)
        patch.setattr(tfds_mnist, "_TEST_EXAMPLES", 10)
        patch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      lambda self, urls: files)
        patch.setenv("TFDS_DATA_DIR", str(data_dir))
        mnist._tfds_builder()[0].download_and_prepare(download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return data_dir


def test_prepared_tfds_loads_without_touching_the_network(prepared_tfds_dir, monkeypatch,
                                                          no_download):
    monkeypatch.setenv("TFDS_DATA_DIR", str(prepared_tfds_dir))
    monkeypatch.setattr(mnist, "_tfds_download_problem", pytest.fail)

    def no_network(*args, **kwargs):
        raise AssertionError("network touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mnist.MnistFallbackWarning)
        assert mnist.resolve_mnist_source("auto") == "tfds"
        dataset = mnist.load_mnist("train")
    assert dataset.element_spec == EXPECTED_SPEC
    images, labels = next(iter(dataset.batch(100)))
    assert images.shape == (30, 28, 28, 1) and float(tf.reduce_max(images)) <= 1.0
    assert sorted(labels.numpy().tolist()) == sorted(digits(30, seed=3)[1].tolist())
    test_images, test_labels = mnist.load_mnist_arrays("test", source="tfds")
    assert test_images.shape == (10, 28, 28, 1) and test_images.dtype == np.float32
    assert test_labels.dtype == np.int32
