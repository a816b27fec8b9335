#!/usr/bin/env python3
"""Writes a minimal, valid pure-Python wheel (PEP 427) without network or build tools.

usage: make-wheel.py OUTDIR NAME VERSION [--payload-mb N] [--payload-files K] [--requires SPEC ...]

The package `NAME` (dashes become underscores) has `__init__.py` with VERSION = '<version>'. With
--payload-mb, N MB of random (incompressible) bytes are spread over K files under NAME/payload/, so the
wheel has a realistic size for benchmarks and for builds that must take a while.
"""
import argparse
import base64
import hashlib
import os
import sys
import zipfile


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("outdir")
    parser.add_argument("name")
    parser.add_argument("version")
    parser.add_argument("--payload-mb", type=float, default=0)
    parser.add_argument("--payload-files", type=int, default=4)
    parser.add_argument("--requires", action="append", default=[])
    args = parser.parse_args()

    module = args.name.replace("-", "_").lower()
    dist = f"{module}-{args.version}"
    files = [
        (f"{module}/__init__.py", f"VERSION = {args.version!r}\nNAME = {args.name!r}\n".encode()),
    ]
    total = int(args.payload_mb * 1024 * 1024)
    count = max(1, args.payload_files) if total else 0
    for i in range(count):
        size = total // count + (1 if i < total % count else 0)
        files.append((f"{module}/payload/blob_{i}.bin", os.urandom(size)))
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {args.name}",
        f"Version: {args.version}",
        "Summary: rgrid test wheel",
    ] + [f"Requires-Dist: {r}" for r in args.requires]
    files.append((f"{dist}.dist-info/METADATA", ("\n".join(metadata) + "\n").encode()))
    files.append((
        f"{dist}.dist-info/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: rgrid-make-wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    ))
    record = [record_line(p, d) for p, d in files] + [f"{dist}.dist-info/RECORD,,"]
    files.append((f"{dist}.dist-info/RECORD", ("\n".join(record) + "\n").encode()))

    os.makedirs(args.outdir, exist_ok=True)
    path = os.path.join(args.outdir, f"{dist}-py3-none-any.whl")
    tmp = path + ".tmp"
    # Random payload does not compress: store it, deflate the small text files.
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, data in files:
            method = zipfile.ZIP_STORED if "/payload/" in name else zipfile.ZIP_DEFLATED
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=method)
    os.replace(tmp, path)
    print(path)


if __name__ == "__main__":
    sys.exit(main())
