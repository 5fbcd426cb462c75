#!/usr/bin/env bash
# Installs, only where missing, the real programs the tests run against. Idempotent and quick when all is
# present (no apt-get at all then); needs root (or sudo) and Debian's package mirror otherwise.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have kubectl || need+=(kubernetes-client)
# NBD peers for tests/Dolly.Nbd.Tests: libnbd's nbdinfo/nbdcopy/nbdfuse, qemu-img, FUSE, nbdkit (benchmarks),
# e2fsprogs for mkfs.ext4/e2fsck on an exported volume, fio for the NBD benchmarks.
{ have nbdinfo && have nbdcopy && have nbdfuse; } || need+=(libnbd-bin)
have qemu-img || need+=(qemu-utils)
have fusermount3 || need+=(fuse3)
have nbdkit || need+=(nbdkit)
{ have mkfs.ext4 && have e2fsck; } || need+=(e2fsprogs)
have fio || need+=(fio)
have losetup || need+=(mount)
# The CSI node's kernel NBD path (tests/Dolly.Csi.Tests KernelNodeTests). The package installs without the nbd
# kernel module; where /dev/nbd0 is absent those tests skip and say so.
have nbd-client || need+=(nbd-client)
# PostgreSQL 15 for `dolly bench db` and its smoke test (server, pgbench and psql, run as the postgres user
# the package creates), found where Debian puts it rather than on PATH.
pg_missing=false
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || { pg_missing=true; need+=(postgresql-15); }
# The web view's browser tests (tests/Dolly.Web.Tests): Debian's headless Chromium, driven by Playwright for .NET
# through its executable (no Playwright browser download).
have chromium || need+=(chromium)
# The image test (tests/Dolly.IntegrationTests ImageTests), only when asked for: it runs
# deploy/kubernetes/build-image.sh, which needs debootstrap and buildah.
if [ "${DOLLY_IMAGE_TESTS:-}" = 1 ]; then
  have debootstrap || need+=(debootstrap)
  have buildah || need+=(buildah)
fi

# tests/Dolly.Repository.Tests and `dolly repo dev-server`: Ceph's radosgw on a single-node cluster on loopback
# (scripts/rgw-dev-server.sh), and restic 0.14, the baseline `dolly bench repo` compares against.
have ceph-mon || need+=(ceph-mon)
have ceph-osd || need+=(ceph-osd)
have radosgw || need+=(radosgw)
{ have ceph && have radosgw-admin; } || need+=(ceph-common)
have monmaptool || need+=(ceph-base)
have uuidgen || need+=(uuid-runtime)
have curl || need+=(curl)
have restic || need+=(restic)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The package creates and starts a "main" cluster on port 5432 that nothing here uses: stop it (its data
  # stays), as the benchmark runs clusters of its own on Unix sockets.
  if $pg_missing && command -v pg_ctlcluster >/dev/null 2>&1; then
    $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
  fi
fi
