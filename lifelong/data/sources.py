"""Datasets as one registry of `Dataset` entries (`DATASETS`): where their folders are found, how they are downloaded.

Adding a dataset is writing its reader (in `lifelong.data.readers`, if its format is new) and adding one entry.
docs/data.md describes the data roots, the checksums, the downloads and the splits we define.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lifelong.data import readers
from lifelong.data.arrays import DatasetSplits
from lifelong.data.download import extract_tar, fetch
from lifelong.data.readers import DIGITS, Checksum
from lifelong.errors import UserError, unknown

SYSTEM_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


@dataclass(frozen=True)
class Download:
    """A dataset's official files: every mirror (tried in order) serves every file; an archive unpacks into the root."""

    mirrors: tuple[str, ...]
    files: tuple[str, ...]
    archive: bool = False


@dataclass(frozen=True)
class Dataset:
    """One dataset: its folder, how the folder is recognised, verified and read, and how its files are obtained."""

    name: str
    description: str  # one line, printed by `lifelong list datasets`
    folder: str  # the dataset's folder in each data root
    markers: tuple[str, ...]  # a folder holding any of these is the dataset's; the first is named when none is found
    reader: Callable[[Path, Dataset], DatasetSplits]  # reads the folder, given this entry
    checksums: Mapping[str, Checksum] = field(default_factory=dict)  # file name -> (hashlib algorithm, hex digest)
    download: Download | None = None  # the official files; None when they must be got by hand, as `manual` says
    manual: str = ""  # how to get the files by hand; "{folder}" stands for where they must go
    class_names: tuple[str, ...] | None = None  # where fixed by the dataset rather than read from its files

    def __post_init__(self) -> None:
        if (self.download is None) == (not self.manual):
            raise ValueError(f"dataset {self.name} needs exactly one of download and manual")


def _read_mnist_format(folder: Path, dataset: Dataset) -> DatasetSplits:
    """Read MNIST or Fashion-MNIST: the same four IDX files, with the entry's checksums and class names."""
    return readers.read_mnist(folder, dataset.name, dataset.checksums, dataset.class_names or DIGITS)


_MNIST_GZ = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
_KRIZHEVSKY = ("https://www.cs.toronto.edu/~kriz/",)

# Checksums: MNIST and Fashion-MNIST, sha256 of each IDX file's decompressed content (so raw or re-compressed files
# verify as well as the official .gz); CIFAR, the md5s published with the datasets; SVHN, the md5s torchvision lists.
# notMNIST and MiniImageNet have no official files or checksums: their readers check the format only.
DATASETS: dict[str, Dataset] = {dataset.name: dataset for dataset in (
    Dataset(
        name="mnist",
        description="MNIST handwritten digits: 60,000 train / 10,000 test, grey 28x28, 10 classes",
        folder="mnist",
        markers=("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"),
        reader=_read_mnist_format,
        checksums={
            "train-images-idx3-ubyte": ("sha256", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            "train-labels-idx1-ubyte": ("sha256", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            "t10k-images-idx3-ubyte": ("sha256", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            "t10k-labels-idx1-ubyte": ("sha256", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        },
        download=Download(("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
                          _MNIST_GZ),
        class_names=DIGITS,
    ),
    Dataset(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images: 60,000 train / 10,000 test, grey 28x28, 10 classes",
        folder="fashion-mnist",
        markers=("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"),
        reader=_read_mnist_format,
        checksums={
            "train-images-idx3-ubyte": ("sha256", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            "train-labels-idx1-ubyte": ("sha256", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            "t10k-images-idx3-ubyte": ("sha256", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            "t10k-labels-idx1-ubyte": ("sha256", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
        download=Download(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), _MNIST_GZ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
    ),
    Dataset(
        name="cifar10",
        description="CIFAR-10 objects: 50,000 train / 10,000 test, colour 32x32, 10 classes",
        folder="cifar-10-batches-py",
        markers=("data_batch_1",),
        reader=lambda folder, dataset: readers.read_cifar(folder, 10, dataset.checksums),
        checksums={
            "cifar-10-python.tar.gz": ("md5", "c58f30108f718f92721af3b95e74349a"),
            "data_batch_1": ("md5", "c99cafc152244af753f735de768cd75f"),
            "data_batch_2": ("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
            "data_batch_3": ("md5", "54ebc095f3ab1f0389bbae665268c751"),
            "data_batch_4": ("md5", "634d18415352ddfa80567beed471001a"),
            "data_batch_5": ("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            "test_batch": ("md5", "40351d587109b95175f43aff81a1287e"),
            "batches.meta": ("md5", "5ff9c542aee3614f3951f8cda6e48888"),
        },
        download=Download(_KRIZHEVSKY, ("cifar-10-python.tar.gz",), archive=True),
    ),
    Dataset(
        name="cifar100",
        description="CIFAR-100 objects: 50,000 train / 10,000 test, colour 32x32, 100 fine classes",
        folder="cifar-100-python",
        markers=("train",),
        reader=lambda folder, dataset: readers.read_cifar(folder, 100, dataset.checksums),
        checksums={
            "cifar-100-python.tar.gz": ("md5", "eb9058c3a382ffc7106e4002c42a8d85"),
            "train": ("md5", "16019d7e3df5f24257cddd939b257f8d"),
            "test": ("md5", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            "meta": ("md5", "7973b15100ade9c7d40fb424638fde48"),
        },
        download=Download(_KRIZHEVSKY, ("cifar-100-python.tar.gz",), archive=True),
    ),
    Dataset(
        name="svhn",
        description="SVHN house-number digits: 73,257 train / 26,032 test, colour 32x32, 10 classes",
        folder="svhn",
        markers=("train_32x32.mat",),
        reader=lambda folder, dataset: readers.read_svhn(folder, dataset.checksums, dataset.class_names or DIGITS),
        checksums={
            "train_32x32.mat": ("md5", "e26dedcc434d2e4c54c9b2d4a06d8373"),
            "test_32x32.mat": ("md5", "eb5a983be6a315427106f1b164d9cef3"),
        },
        download=Download(("http://ufldl.stanford.edu/housenumbers/",), ("train_32x32.mat", "test_32x32.mat")),
        class_names=DIGITS,
    ),
    Dataset(
        name="notmnist",
        description="notMNIST_small letters A-J in many fonts: ~18,700 grey 28x28, 80/20 split per class",
        folder="notMNIST_small",
        markers=("A",),
        reader=lambda folder, dataset: readers.read_notmnist(folder),
        manual=(
            "notMNIST has no official download that can be verified: get notMNIST_small.tar.gz from Yaroslav "
            "Bulatov's notMNIST page (yaroslavvb.blogspot.com/2011/09/notmnist-dataset.html), unpack it and put the "
            "notMNIST_small folder (subfolders A..J of PNGs) at {folder}, or pass --data-dir DIR"
        ),
    ),
    Dataset(
        name="mini-imagenet",
        description="MiniImageNet: 100 ImageNet classes x 600 colour 84x84, 500/100 split per class",
        folder="mini-imagenet",
        markers=("mini-imagenet-cache-train.pkl",),
        reader=lambda folder, dataset: readers.read_mini_imagenet(folder),
        manual=(
            "MiniImageNet has no official download (it is cut from ImageNet): get the pickles "
            "mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl and mini-imagenet-cache-test.pkl "
            "(the Ravi & Larochelle split, as distributed e.g. by learn2learn) and put them in {folder}, "
            "or pass --data-dir DIR"
        ),
    ),
)}


# ----------------------------------------------------------------------------------------------------------------
# Finding and loading


def candidate_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Roots searched for datasets, in priority order: explicit dir, $LIFELONG_DATA, ~/.cache/lifelong, system dirs."""
    roots = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get("LIFELONG_DATA"):
        roots.append(Path(os.environ["LIFELONG_DATA"]).expanduser())
    roots.append(Path.home() / ".cache" / "lifelong")
    roots.extend(SYSTEM_ROOTS)
    return list(dict.fromkeys(roots))


def find_dataset(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first folder holding dataset `name` among the candidate roots, or None when there is none."""
    dataset = _dataset(name)
    return next((folder for folder in _places(dataset, data_dir) if _is_dataset_folder(dataset, folder)), None)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False,
                 progress: bool = True) -> DatasetSplits:
    """Find, verify and read dataset `name`; download it first if asked and it is missing."""
    dataset = _dataset(name)
    folder = find_dataset(name, data_dir)
    if folder is None:
        if not (download and dataset.download):
            raise UserError(_not_found_message(dataset, data_dir))
        folder = download_dataset(name, download_root(data_dir), progress=progress)
    return dataset.reader(folder, dataset)


def _dataset(name: str) -> Dataset:
    """The registry entry of dataset `name`; an unknown name is rejected with the list of known ones."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    return DATASETS[name]


def _places(dataset: Dataset, data_dir: str | Path | None) -> list[Path]:
    """Folders that may hold `dataset`, in order; an explicit data dir may itself be the dataset folder."""
    places = [root / dataset.folder for root in candidate_roots(data_dir)]
    if data_dir:
        places.insert(1, Path(data_dir).expanduser())
    return places


def _is_dataset_folder(dataset: Dataset, folder: Path) -> bool:
    """Whether `folder` holds `dataset`, judged by its marker files."""
    return any((folder / marker).exists() for marker in dataset.markers)


def _not_found_message(dataset: Dataset, data_dir: str | Path | None) -> str:
    """One line naming the missing file, every place looked, and how to get the dataset."""
    places = ", ".join(str(place) for place in _places(dataset, data_dir))
    if dataset.download:
        how = f"run `lifelong download {dataset.name}` or pass --data-dir DIR"
    else:
        how = dataset.manual.format(folder=candidate_roots(data_dir)[0] / dataset.folder)
    return f"{dataset.name}: {dataset.markers[0]} not found in any of {places}; {how}"


def download_root(data_dir: str | Path | None) -> Path:
    """The first writable root among the explicit dir, $LIFELONG_DATA and ~/.cache/lifelong (created if needed)."""
    writable_roots = [root for root in candidate_roots(data_dir) if root not in SYSTEM_ROOTS]
    for root in writable_roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise UserError(f"no writable data directory among {', '.join(map(str, writable_roots))}; pass --data-dir DIR")


# ----------------------------------------------------------------------------------------------------------------
# Downloading


def download_dataset(name: str, root: str | Path, base_url: str | None = None, progress: bool = True) -> Path:
    """Download dataset `name`'s official files into `root` (verified, atomic) and return its folder."""
    dataset = _dataset(name)
    root = Path(root).expanduser()
    folder = root / dataset.folder
    source = dataset.download
    if source is None:
        raise UserError(dataset.manual.format(folder=folder))
    if source.archive:
        if not _complete(dataset, folder):
            archive = root / source.files[0]
            fetch(_urls(source, archive.name, base_url), archive, _verifier(dataset, archive.name), progress)
            _unpack(archive, root, dataset.folder)
        return folder
    for filename in source.files:
        dest = folder / filename
        if not _verifies(dataset, dest):
            fetch(_urls(source, filename, base_url), dest, _verifier(dataset, filename), progress)
    return folder


def _urls(source: Download, filename: str, base_url: str | None) -> list[str]:
    """A file's URL on each mirror, with scheme and host replaced by `base_url` when given."""
    urls = [mirror + filename for mirror in source.mirrors]
    if base_url is None:
        return urls
    return [base_url.rstrip("/") + urlsplit(url).path for url in urls]


def _checksum_for(dataset: Dataset, filename: str) -> tuple[Checksum | None, bool]:
    """The checksum of a dataset file and whether it is of the gunzipped content (`x.gz` verified as `x`)."""
    if filename in dataset.checksums:
        return dataset.checksums[filename], False
    if filename.endswith(".gz") and filename[:-3] in dataset.checksums:
        return dataset.checksums[filename[:-3]], True
    return None, False


def _verifier(dataset: Dataset, filename: str) -> Callable[[Path], None]:
    """A check for a downloaded (temporary) file: raise UserError unless it matches the file's checksum."""
    checksum, gunzip = _checksum_for(dataset, filename)
    assert checksum is not None, f"{dataset.name}/{filename} is downloadable, so it must have a checksum"

    def verify(path: Path) -> None:
        try:
            readers.read_checked(path, checksum, gunzip)
        except UserError:
            raise UserError(f"checksum mismatch: the server sent a damaged or different {filename}") from None

    return verify


def _verifies(dataset: Dataset, path: Path) -> bool:
    """Whether `path` exists and matches its checksum, so it need not be downloaded again."""
    checksum, gunzip = _checksum_for(dataset, path.name)
    if not path.is_file() or checksum is None:
        return False
    try:
        readers.read_checked(path, checksum, gunzip)
    except UserError:
        return False
    return True


def _complete(dataset: Dataset, folder: Path) -> bool:
    """Whether an archive's dataset folder already holds every checksummed file, all verified."""
    archive_names = set(dataset.download.files) if dataset.download else set()
    return all(_verifies(dataset, folder / name) for name in dataset.checksums if name not in archive_names)


def _unpack(archive: Path, root: Path, folder_name: str) -> None:
    """Extract `archive` beside itself, move its dataset folder into `root` (replacing any old one), delete it."""
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder_name}."))
    try:
        extract_tar(archive, staging)
        if not (staging / folder_name).is_dir():
            raise UserError(f"{archive} does not contain the folder {folder_name}; delete it and download it again")
        shutil.rmtree(root / folder_name, ignore_errors=True)
        os.replace(staging / folder_name, root / folder_name)
        archive.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
