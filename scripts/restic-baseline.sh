#!/usr/bin/env bash
# The restic side of `dolly bench repo`: back up a disk image with restic 0.14 (Debian) into the radosgw dev server
# (scripts/rgw-dev-server.sh), restore it, check the bytes, and report what it sent and how long each step took.
#
#   restic-baseline.sh RGW_DIR IMAGE [NAME]
#
# RGW_DIR is a dev server's state directory (started here if it is not running); IMAGE a raw disk image; NAME the
# restic repository inside the bucket "restic-baseline" (default: the image's file name), so a second backup of
# a changed image under the same NAME is restic's incremental run. The output ends with one line per step:
#
#   backup  image=... size=BYTES processed=BYTES added=BYTES stored=BYTES seconds=S
#   restore image=... bytes=BYTES seconds=S identical=yes
#
# "added" is what restic found new (before compression and encryption), "stored" what the bucket grew by.
# Repository password: $RESTIC_PASSWORD, or a fixed throwaway one (this is a benchmark, not a backup).
set -euo pipefail

[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: restic-baseline.sh RGW_DIR IMAGE [NAME]" >&2; exit 2; }
rgw_dir=$1
image=$2
name=${3:-$(basename "$image")}
here=$(cd "$(dirname "$0")" && pwd)
readonly bucket=restic-baseline

die() { echo "restic-baseline: $*" >&2; exit 1; }
command -v restic >/dev/null 2>&1 || die "restic is not installed; run scripts/install-test-deps.sh"
[ -f "$image" ] || die "no image file '$image'"
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "NAME '$name' may hold only letters, digits, '.', '_' and '-'"

eval "$("$here/rgw-dev-server.sh" start "$rgw_dir" | sed -n 's/^\(DOLLY_S3_[A-Z_]*\)=\(.*\)$/\1=\2/p')"
export AWS_ACCESS_KEY_ID=$DOLLY_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$DOLLY_S3_SECRET_KEY
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-dolly-bench-throwaway}
export RESTIC_REPOSITORY="s3:$DOLLY_S3_ENDPOINT/$bucket/$name"
opts=(-o s3.bucket-lookup=path -o "s3.region=$DOLLY_S3_REGION" --no-cache --quiet)

# What the repository holds, from radosgw's own accounting of the bucket (bytes actually stored).
bucket_bytes() {
  radosgw-admin --conf "$rgw_dir/ceph.conf" bucket stats --bucket "$bucket" 2>/dev/null |
    sed -n 's/.*"size_actual": \([0-9]*\).*/\1/p' | head -1 | grep . || echo 0
}

restic "${opts[@]}" cat config >/dev/null 2>&1 || restic "${opts[@]}" init >/dev/null

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
before=$(bucket_bytes)
t0=$(now)
summary=$(restic "${opts[@]}" backup --json "$image" | grep '"message_type":"summary"')
t1=$(now)
after=$(bucket_bytes)
field() { echo "$summary" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
size=$(stat -c %s "$image")
echo "backup  image=$image size=$size processed=$(field total_bytes_processed) added=$(field data_added) stored=$((after - before)) seconds=$(elapsed "$t0" "$t1")"

target=$(mktemp -d "${TMPDIR:-/tmp}/restic-baseline.XXXXXX")
trap 'rm -rf "$target"' EXIT
t0=$(now)
restic "${opts[@]}" restore latest --target "$target" >/dev/null
t1=$(now)
restored="$target$(cd "$(dirname "$image")" && pwd)/$(basename "$image")"
[ -f "$restored" ] || die "restic restored no '$restored'"
identical=no
cmp -s "$image" "$restored" && identical=yes
echo "restore image=$image bytes=$(stat -c %s "$restored") seconds=$(elapsed "$t0" "$t1") identical=$identical"
[ "$identical" = yes ] || die "the restored image differs from '$image'"
