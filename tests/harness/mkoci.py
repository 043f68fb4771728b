#!/usr/bin/env python3
"""Packs a root filesystem folder as a single-layer OCI image archive (oci-layout tar).

usage: mkoci.py ROOTFS NAME OUT.tar [--cmd JSON] [--entrypoint JSON] [--env K=V ...] [--user U]

The index names the image NAME (org.opencontainers.image.ref.name and
io.containerd.image.name), so `buildah pull oci-archive:OUT.tar` and
`ctr images import OUT.tar` both register it under NAME. Used for the base images that the
Dockerfiles name and no registry can give here (tests/harness/images.sh).
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def add_bytes(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rootfs")
    parser.add_argument("name")
    parser.add_argument("out")
    parser.add_argument("--cmd")
    parser.add_argument("--entrypoint")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--user")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as tmp:
        layer = os.path.join(tmp, "layer.tar")
        # GNU tar keeps owners, modes, device nodes, hard links and xattrs as they are;
        # sorted names and a fixed mtime make the same tree give the same digest.
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "--sort=name", "--mtime=@0",
             "-C", args.rootfs, "-cf", layer, "."],
            check=True,
        )
        layer_digest = sha256_of(layer)
        config = {"Env": args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
        if args.cmd:
            config["Cmd"] = json.loads(args.cmd)
        if args.entrypoint:
            config["Entrypoint"] = json.loads(args.entrypoint)
        if args.user:
            config["User"] = args.user
        # buildah counts the layers in the history: one entry for the one layer.
        config_blob = json.dumps({
            "architecture": "amd64", "os": "linux", "config": config,
            "created": "1970-01-01T00:00:00Z",
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/harness/mkoci.py " + args.name}],
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }).encode()
        config_digest = "sha256:" + hashlib.sha256(config_blob).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config_blob)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": os.path.getsize(layer)}],
        }).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = json.dumps({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": args.name,
                                "io.containerd.image.name": args.name},
            }],
        }).encode()
        with tarfile.open(args.out + ".partial", "w") as archive:
            add_bytes(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add_bytes(archive, "index.json", index)
            add_bytes(archive, "blobs/sha256/" + config_digest[7:], config_blob)
            add_bytes(archive, "blobs/sha256/" + manifest_digest[7:], manifest)
            archive.add(layer, "blobs/sha256/" + layer_digest[7:])
        os.replace(args.out + ".partial", args.out)


if __name__ == "__main__":
    main()
