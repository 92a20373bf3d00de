"""MNIST as ``tf.data`` pipelines or NumPy arrays, from one of three sources.

- ``"tfds"``: the full 60,000 + 10,000 digits from tensorflow-datasets.
- ``"idx"``: any folder of MNIST-format IDX files (``data_dir=``), gzipped or not.
- ``"sample"``: 8,000 + 2,000 digits shipped inside this package (``attacks/mnist_sample/``,
  credit and licence in its README).

``"auto"`` picks ``"idx"`` when ``data_dir`` is given, else ``"tfds"`` when MNIST is prepared
in the tensorflow-datasets data directory or its download host answers, else ``"sample"``
with an ``MnistFallbackWarning``. ``resolve_mnist_source`` returns the choice, so an
experiment can save it beside its results.

Offline, nothing hangs: tensorflow-datasets 4.9.10 retries an unreachable download for about
3.5 minutes (10 urllib3 retries with exponential backoff; measured 204 s on a machine without
network), so before downloading we probe the host with one TCP connection bounded to a few
seconds, and give up at once if it does not answer.

Images are float32 ``[28, 28, 1]`` in [0, 1]; labels are int32 in 0..9.

References:
    Y. LeCun, C. Cortes, C.J.C. Burges. The MNIST database of handwritten digits.
    http://yann.lecun.com/exdb/mnist/ (the IDX format is described on the same page).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from lab.checks import check_one_of

SPLITS = ("train", "test")
SOURCES = ("auto", "tfds", "idx", "sample")

SAMPLE_DIR = Path(__file__).with_name("mnist_sample")

IMAGE_SIZE = 28
NUM_CLASSES = 10

# A probe must answer within this many seconds for "auto" to choose a tfds download.
PROBE_TIMEOUT_S = 3.0
# Where tensorflow-datasets' MNIST builder downloads from, if its class cannot be read.
_FALLBACK_DOWNLOAD_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08  # the only IDX element type MNIST uses
_KIND_BY_NDIM = {3: "images", 1: "labels"}
_PREFIX = {"train": "train", "test": "t10k"}


class MnistFallbackWarning(UserWarning):
    """``source="auto"`` fell back to the 10,000-digit bundled sample instead of full MNIST."""


# --- IDX files ---------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """Reads one MNIST IDX file (gzipped or raw) into a uint8 array.

    Gzip is recognised by its magic bytes, not by the file name. The header must be that of
    MNIST images (magic ``0x00000803``: count x rows x columns) or labels (``0x00000801``:
    count), and the data must be exactly as long as the header says.

    Args:
        path: the file.

    Returns:
        A writable ``np.uint8`` array of shape ``[n, rows, cols]`` (images) or ``[n]``
        (labels).

    Raises:
        ValueError: naming ``path`` and what is wrong with it (not IDX, an element type other
            than unsigned byte, a truncated header or data, trailing bytes, corrupt gzip, no
            images or labels at all).
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: gzip data is corrupt or truncated ({e})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header "
                         "(at least 4 bytes)")
    zeros, dtype, ndim = data[:2], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zeros != b"\0\0":
        raise ValueError(f"{path}: not an IDX file: magic number 0x{magic:08x} does not start "
                         "with two zero bytes (MNIST uses 0x00000803 for images, 0x00000801 "
                         "for labels)")
    if dtype != _UBYTE:
        raise ValueError(f"{path}: IDX element type byte is 0x{dtype:02x}; only 0x08 (unsigned "
                         "byte), the type of every MNIST file, is supported")
    if ndim not in _KIND_BY_NDIM:
        raise ValueError(f"{path}: IDX header has {ndim} dimensions (magic 0x{magic:08x}); "
                         "MNIST files have 3 (images, 0x00000803) or 1 (labels, 0x00000801)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: header declares {ndim} dimensions, which needs "
                         f"{header_len} bytes, but the file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    got = len(data) - header_len
    if got != expected:
        what = "pixels" if ndim == 3 else "labels"
        raise ValueError(f"{path}: header says {' x '.join(map(str, shape))} = {expected} bytes "
                         f"of {what}, file has {got}")
    if shape[0] == 0:  # fail here, not after an experiment has trained on nothing
        raise ValueError(f"{path}: holds 0 {_KIND_BY_NDIM[ndim]}; an MNIST file must hold at "
                         "least one")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def idx_file_names(split: str, kind: str) -> list[str]:
    """File names accepted for ``split`` ("train"/"test") and ``kind`` ("images"/"labels"),
    in the order they are looked for: MNIST's own names, then the common ``.idx`` variant."""
    check_one_of("split", split, SPLITS)
    check_one_of("kind", kind, ("images", "labels"))
    stem = f"{_PREFIX[split]}-{kind}"
    n = 3 if kind == "images" else 1
    return [name + gz for name in (f"{stem}-idx{n}-ubyte", f"{stem}.idx{n}-ubyte")
            for gz in ("", ".gz")]


def read_mnist_dir(data_dir, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split from a folder of MNIST IDX files.

    Args:
        data_dir: a folder holding ``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
            ``t10k-labels-idx1-ubyte[.gz]`` (or the ``train-images.idx3-ubyte`` spellings).
        split: "train" or "test".

    Returns:
        ``(images, labels)``: uint8 ``[n, 28, 28]`` and uint8 ``[n]``.

    Raises:
        FileNotFoundError: the folder or a file is missing (listing the names looked for).
        ValueError: a file is malformed, images are not 28 x 28, the counts of images and
            labels differ, or a label is outside 0..9; the message names the file.
    """
    check_one_of("split", split, SPLITS)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir must be a folder of MNIST IDX files. Received: "
                                f"data_dir={str(data_dir)!r}, which "
                                f"{'is not a folder' if data_dir.exists() else 'does not exist'}")
    images_path = _find(data_dir, split, "images")
    labels_path = _find(data_dir, split, "labels")
    images = _read_kind(images_path, "images")
    labels = _read_kind(labels_path, "labels")
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{images_path}: MNIST images are {IMAGE_SIZE} x {IMAGE_SIZE}; this "
                         f"file's are {images.shape[1]} x {images.shape[2]}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has "
                         f"{len(labels)} labels; they must match one to one")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise ValueError(f"{labels_path}: labels must be in 0..{NUM_CLASSES - 1}; {bad.size} "
                         f"are not, the first is {labels[bad[0]]} at index {bad[0]}")
    return images, labels


def _find(data_dir: Path, split: str, kind: str) -> Path:
    names = idx_file_names(split, kind)
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: no MNIST {split} {kind} file; looked for "
                            f"{', '.join(names)}")


def _read_kind(path: Path, kind: str) -> np.ndarray:
    array = read_idx(path)
    found = _KIND_BY_NDIM[array.ndim]
    if found != kind:
        raise ValueError(f"{path}: expected an MNIST {kind} file but this is a {found} file "
                         f"({array.ndim} dimension{'s' if array.ndim > 1 else ''})")
    return array


# --- tensorflow-datasets -----------------------------------------------------------------


def _tfds_data_dir() -> str:
    # tfds reads TFDS_DATA_DIR once, at import; we read it at each call, with the same rule.
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                           "tensorflow_datasets")


def _tfds_available() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _tfds_offline_safe():
    """Turns off tfds's look-ups in its public GCS bucket while inside.

    tfds 4.9.0 (within our ``>=4.9`` pin) asks the bucket for MNIST's metadata whenever a
    builder is made for unprepared data, which offline stalls for minutes; 4.9.10 has the
    switch off already. MNIST's own files come from its download URL, not from this bucket.
    The absl warning "Variant folder ... has no dataset_info.json" is noise for an unprepared
    folder, so it is silenced too.
    """
    from tensorflow_datasets.core.utils import gcs_utils

    absl_logger = logging.getLogger("absl")
    saved_level = absl_logger.level
    saved_switch = getattr(gcs_utils, "_is_gcs_disabled", None)  # private: may go away
    if saved_switch is not None:
        gcs_utils._is_gcs_disabled = True
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        if saved_switch is not None:
            gcs_utils._is_gcs_disabled = saved_switch
        absl_logger.setLevel(saved_level)


def _tfds_builder():
    """tfds's MNIST builder for our data_dir, and whether its data is prepared there."""
    import tensorflow_datasets as tfds

    with _tfds_offline_safe():
        builder = tfds.builder("mnist", data_dir=_tfds_data_dir())
        return builder, builder.is_prepared()


def tfds_mnist_prepared() -> bool:
    """Whether full MNIST is prepared in the tensorflow-datasets data directory
    (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``). Reads only local files."""
    return _tfds_available() and _tfds_builder()[1]


def _tfds_download_address() -> tuple[str, int]:
    """The (host, port) a tfds MNIST download first connects to: the proxy if one is set."""
    try:
        from tensorflow_datasets.image_classification import mnist as tfds_mnist
        url = tfds_mnist.MNIST.URL
    except (ImportError, AttributeError):
        url = _FALLBACK_DOWNLOAD_URL
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)  # requests honours the same vars
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname, proxy_parts.port or 80
    return host, port


def _tfds_download_problem(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """One TCP connection to the MNIST download host, bounded to ``timeout`` seconds in all
    (DNS included, which a socket timeout does not cover, hence the thread).

    Returns:
        ``None`` if the host accepted the connection, else why not, in a few words.
    """
    host, port = _tfds_download_address()
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["error"] = None
        except OSError as e:
            outcome["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=connect, name="mnist-download-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in outcome:
        return f"{host}:{port} did not answer within {timeout:g} s"
    if outcome["error"] is not None:
        return f"cannot connect to {host}:{port} ({outcome['error']})"
    return None


def _tfds_prepared_builder():
    """The tfds MNIST builder, downloading and preparing the data first if need be; raises
    ``ConnectionError`` at once (not after minutes of retries) when that cannot work."""
    import tensorflow_datasets as tfds

    builder, prepared = _tfds_builder()
    if prepared:
        return builder
    problem = _tfds_download_problem()
    if problem is not None:
        raise ConnectionError(
            f"MNIST is not prepared in the tensorflow-datasets data_dir {_tfds_data_dir()} and "
            f"cannot be downloaded: {problem}. Use source='sample' (the bundled 8,000 + 2,000 "
            "digits), or data_dir= a folder of MNIST IDX files, or prepare it on a machine "
            "with network (`tfds build mnist`) and copy the folder here (or point "
            "TFDS_DATA_DIR at it).")
    with _tfds_offline_safe():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


# --- choosing a source and loading -------------------------------------------------------


def default_source(source: str | None, data_dir=None) -> str:
    """An experiment's ``--source``: ``source`` if given, else what ``data_dir`` implies:
    ``"idx"`` with a folder, else the bundled ``"sample"`` (offline, no probe)."""
    if source is not None:
        return source
    return "idx" if data_dir is not None else "sample"


def resolve_mnist_source(source: str = "auto", data_dir=None) -> str:
    """The concrete source that ``load_mnist(split, source, data_dir)`` reads from.

    Save the result with an experiment's results: ``"auto"`` may mean full MNIST on one
    machine and the 10,000-digit sample on another.

    Args:
        source: "auto", "tfds", "idx" or "sample".
        data_dir: a folder of MNIST IDX files; only with ``source`` "idx" or "auto".

    Returns:
        "tfds", "idx" or "sample". For "auto": "idx" if ``data_dir`` is given; else "tfds" if
        MNIST is prepared for tensorflow-datasets or its download host answers within
        ``PROBE_TIMEOUT_S``; else "sample", with an ``MnistFallbackWarning``.

    Raises:
        ValueError: an unknown ``source``, "idx" without ``data_dir``, or ``data_dir`` with
            "tfds" or "sample".
    """
    check_one_of("source", source, SOURCES)
    if source == "idx" and data_dir is None:
        raise ValueError("source='idx' needs data_dir, a folder of MNIST IDX files. "
                         "Received: data_dir=None")
    if source in ("tfds", "sample") and data_dir is not None:
        raise ValueError(f"data_dir is only read with source 'idx' or 'auto'. Received: "
                         f"source={source!r}, data_dir={str(data_dir)!r}")
    if source != "auto":
        return source
    if data_dir is not None:
        return "idx"
    if not _tfds_available():
        problem = "tensorflow-datasets is not installed"
    elif tfds_mnist_prepared():
        return "tfds"
    else:
        problem = _tfds_download_problem()
        if problem is None:
            return "tfds"
    # warnings.warn rather than logging: it prints to stderr by default, is shown once per
    # call site rather than on every split, and a run that must have full MNIST can make it
    # an error (`-W error::attacks.mnist.MnistFallbackWarning` or warnings.simplefilter).
    warnings.warn(
        f"MNIST: using the bundled SAMPLE (8,000 train + 2,000 test digits), not full MNIST, "
        f"because it is not prepared in {_tfds_data_dir()} and cannot be downloaded "
        f"({problem}). Results are not comparable with full-MNIST numbers. Pass "
        "data_dir= a folder of MNIST IDX files, or prepare tfds MNIST, to use the full set.",
        MnistFallbackWarning, stacklevel=2)
    return "sample"


def load_mnist_arrays(split: str, source: str = "auto", data_dir=None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One MNIST split in memory, for training from arrays (fastest for the small sample).

    Args:
        split: "train" or "test".
        source: "auto", "tfds", "idx" or "sample" (see ``resolve_mnist_source``).
        data_dir: a folder of MNIST IDX files, for ``source`` "idx" or "auto".

    Returns:
        ``(images, labels)``: float32 ``[n, 28, 28, 1]`` in [0, 1] and int32 ``[n]``.
    """
    check_one_of("split", split, SPLITS)
    source = resolve_mnist_source(source, data_dir)
    if source == "tfds":
        import tensorflow_datasets as tfds

        images, labels = tfds.as_numpy(_tfds_prepared_builder().as_dataset(
            split=split, batch_size=-1, as_supervised=True))  # images already [n, 28, 28, 1]
    else:
        images, labels = read_mnist_dir(data_dir if source == "idx" else SAMPLE_DIR, split)
        images = images[..., None]
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def load_mnist(split: str, source: str = "auto", data_dir=None) -> tf.data.Dataset:
    """One MNIST split as an unbatched ``tf.data.Dataset`` of ``(image, label)``.

    Shuffle, batch and prefetch it yourself; the order is the source's own.

    Args:
        split: "train" or "test".
        source: "auto", "tfds", "idx" or "sample" (see ``resolve_mnist_source``).
        data_dir: a folder of MNIST IDX files, for ``source`` "idx" or "auto".

    Returns:
        Elements ``(float32 [28, 28, 1] in [0, 1], int32 scalar)``.

    Raises:
        ValueError: bad ``split``/``source``/``data_dir``, or malformed IDX files.
        FileNotFoundError: IDX files missing from ``data_dir``.
        ConnectionError: ``source="tfds"``, MNIST not prepared and its host unreachable.
    """
    check_one_of("split", split, SPLITS)
    source = resolve_mnist_source(source, data_dir)
    if source == "tfds":
        dataset = _tfds_prepared_builder().as_dataset(split=split, as_supervised=True)
    else:
        images, labels = read_mnist_dir(data_dir if source == "idx" else SAMPLE_DIR, split)
        # uint8 until the map: a quarter of the memory of float32 for full MNIST.
        dataset = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
    return dataset.map(_scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _scale(image, label):
    return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)
