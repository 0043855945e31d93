"""A PEP 517 build backend for the pure-Python tsq package, standard
library only, so that `pip install ./bindings/python` needs nothing from an
index (pip's isolated build environment has no setuptools offline).

It builds a wheel (the packages listed in [tool.tsq_build], with
[project] metadata from pyproject.toml, tomllib on Python 3.11+ or a
minimal reader before) and a source archive. Not installed itself."""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "py3-none-any"


def _pyproject():
    path = os.path.join(HERE, "pyproject.toml")
    try:
        import tomllib
    except ImportError:                     # Python < 3.11: the few keys used here
        return _mini_toml(open(path, encoding="utf-8").read())
    with open(path, "rb") as f:
        return tomllib.load(f)


def _mini_toml(text):
    data, table = {}, None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.strip().startswith("description") \
            else line.strip()
        if not line:
            continue
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            table = data
            for part in m.group(1).split("."):
                table = table.setdefault(part, {})
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value.startswith("["):
            table[key.strip()] = re.findall(r'"([^"]*)"', value)
        elif value.startswith("{"):
            table[key.strip()] = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', value))
        else:
            table[key.strip()] = value.strip('"')
    return data


def _meta():
    cfg = _pyproject()
    proj = cfg["project"]
    lines = ["Metadata-Version: 2.1", "Name: %s" % proj["name"], "Version: %s" % proj["version"],
             "Summary: %s" % proj.get("description", ""),
             "Requires-Python: %s" % proj.get("requires-python", ">=3")]
    for extra, reqs in sorted(proj.get("optional-dependencies", {}).items()):
        lines.append("Provides-Extra: %s" % extra)
        lines += ["Requires-Dist: %s; extra == \"%s\"" % (r, extra) for r in reqs]
    readme = proj.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(HERE, readme), encoding="utf-8") as f:
            body = f.read()
    return cfg, proj, "\n".join(lines) + "\n\n" + body


def _files(cfg):
    out = []
    for pkg in cfg.get("tool", {}).get("tsq_build", {}).get("packages", ["tsq"]):
        for root, dirs, files in os.walk(os.path.join(HERE, pkg)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if (name.endswith(".py") or name == "py.typed") and name != "_install.py":
                    full = os.path.join(root, name)
                    out.append((full, os.path.relpath(full, HERE).replace(os.sep, "/")))
    return out


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (arcname, digest, len(data))


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel


def _dist_info(proj):
    return "%s-%s.dist-info" % (proj["name"], proj["version"])


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    cfg, proj, metadata = _meta()
    d = os.path.join(metadata_directory, _dist_info(proj))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w", encoding="utf-8") as f:
        f.write(metadata)
    return _dist_info(proj)


def _write_wheel(wheel_directory, entries):
    cfg, proj, metadata = _meta()
    name = "%s-%s-%s.whl" % (proj["name"], proj["version"], TAG)
    info = _dist_info(proj)
    records = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in entries(cfg) + [
                (info + "/METADATA", metadata.encode("utf-8")),
                (info + "/WHEEL", ("Wheel-Version: 1.0\nGenerator: tsq_build\n"
                                   "Root-Is-Purelib: true\nTag: %s\n" % TAG).encode())]:
            z.writestr(arcname, data)
            records.append(_record_line(arcname, data))
        records.append(info + "/RECORD,,")
        z.writestr(info + "/RECORD", "\n".join(records) + "\n")
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    def entries(cfg):
        return [(arc, open(full, "rb").read()) for full, arc in _files(cfg)]
    return _write_wheel(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 660: a .pth file pointing at this directory."""
    return _write_wheel(wheel_directory, lambda cfg: [("tsq_editable.pth",
                                                       (HERE + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    cfg, proj, _ = _meta()
    base = "%s-%s" % (proj["name"], proj["version"])
    name = base + ".tar.gz"
    extra = ["pyproject.toml", "README.md", "build_backend/tsq_build.py"]
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for full, arc in _files(cfg) + [(os.path.join(HERE, e), e) for e in extra]:
            tar.add(full, arcname=base + "/" + arc)
        data = _meta()[2].encode("utf-8")
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    return name
