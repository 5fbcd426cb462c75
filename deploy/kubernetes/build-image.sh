#!/usr/bin/env bash
# Builds the dolly image of deploy/kubernetes/Dockerfile without a Docker engine, and writes it as a
# docker-archive tarball that `kind load image-archive`, `docker load`, `podman load` and `skopeo copy` take.
#
#   deploy/kubernetes/build-image.sh [--tag dolly:latest] [--archive dolly-image.tar] [--rootfs DIR]
#                                    [--mirror URL] [--security-mirror URL]
#
# The same image as the Dockerfile, made from the same parts:
#   base      Debian bookworm, minbase (debootstrap --variant=minbase, which is what debian:bookworm-slim is
#             made from), with bookworm-updates and bookworm-security applied and the same documentation,
#             manual and locale paths left out as in the slim image;
#   dolly     `dotnet publish src/Dolly -r linux-<arch> --self-contained` in /app, on PATH as /usr/local/bin/dolly
#             (self-contained because Debian's archive has no .NET 10 runtime package to install);
#   tools     the packages of the Dockerfile's apt-get install line (IMAGE_PACKAGES below);
#   config    ENTRYPOINT ["dolly"], CMD ["--help"], the PATH of the Debian image.
# It needs root, debootstrap, buildah (Debian packages of those names), the .NET 10 SDK, and the Debian mirror
# (the one this machine's apt uses, unless --mirror says otherwise). It builds for this machine's architecture
# (amd64 or arm64): the package scripts run in a chroot, so another architecture would need an emulator.
# Containers are not started at any step: buildah only writes the root file system into a new image.
set -euo pipefail

# Keep in step with the Dockerfile's apt-get install line (tests/Dolly.IntegrationTests/ImageTests checks it).
# libssl3 and ca-certificates are what the runtime image of .NET adds for TLS (the NBD server and client,
# the Kubernetes API); InvariantGlobalization is on, so no ICU.
IMAGE_PACKAGES=(nbd-client libnbd-bin fuse3 e2fsprogs xfsprogs util-linux mount libssl3 ca-certificates)
SUITE=bookworm
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# What the image's own apt points at (the mirror used to build may be a local one the cluster cannot reach).
PUBLIC_MIRROR=http://deb.debian.org/debian
PUBLIC_SECURITY_MIRROR=http://deb.debian.org/debian-security

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tag=dolly:latest
archive=$PWD/dolly-image.tar
keep_rootfs=""
mirror=${DOLLY_DEBIAN_MIRROR:-}
security_mirror=${DOLLY_DEBIAN_SECURITY_MIRROR:-}

die() { echo "build-image.sh: error: $*" >&2; exit 1; }
step() { echo "build-image.sh: $*" >&2; }
usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift 2 ;;
    --archive) [ $# -ge 2 ] || die "--archive needs a value"; archive=$2; shift 2 ;;
    --rootfs) [ $# -ge 2 ] || die "--rootfs needs a value"; keep_rootfs=$2; shift 2 ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a value"; mirror=$2; shift 2 ;;
    --security-mirror) [ $# -ge 2 ] || die "--security-mirror needs a value"; security_mirror=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# The arguments first, so that a mistake costs nothing.
# An image name as docker and containerd accept it: [registry[:port]/]path[:tag], lower-case path components.
name_re='^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$'
[[ "$tag" =~ $name_re ]] || die "--tag '$tag' is not an image name ([registry/]name[:tag], lower-case name)"
# The archive names the image as docker.io/library/NAME for a bare NAME: what `docker load`, containerd (kind)
# and a pod's `image: NAME` resolve NAME to (buildah alone would call it localhost/NAME).
case "${tag##*/}" in *:*) ;; *) tag=$tag:latest ;; esac
case "$tag" in
  */*) first=${tag%%/*}
       case "$first" in *.*|*:*|localhost) image_ref=$tag ;; *) image_ref=docker.io/$tag ;; esac ;;
  *) image_ref=docker.io/library/$tag ;;
esac
for m in "$mirror" "$security_mirror"; do
  case "$m" in ""|http://?*|https://?*|file:/?*) ;; *) die "mirror '$m' is not an http://, https:// or file:/ URL" ;; esac
done
[ -z "$keep_rootfs" ] || [ ! -e "$keep_rootfs" ] || die "--rootfs $keep_rootfs exists already; name a new directory"
[ ! -d "$archive" ] || die "--archive $archive is a directory; name the tarball to write"
archive_dir=$(dirname -- "$archive")
[ -d "$archive_dir" ] || die "the directory of --archive $archive ($archive_dir) does not exist"
archive=$(cd "$archive_dir" && pwd)/$(basename -- "$archive")

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap and the package scripts in the chroot need it"
missing=()
for tool in debootstrap:debootstrap buildah:buildah unshare:util-linux chroot:coreutils tar:tar; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] || die "missing programs; install the Debian packages: ${missing[*]}"
command -v dotnet >/dev/null 2>&1 || die "dotnet (the .NET 10 SDK) is not on PATH"

arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case "$arch" in
  amd64|x86_64) arch=amd64; rid=linux-x64 ;;
  arm64|aarch64) arch=arm64; rid=linux-arm64 ;;
  *) die "architecture '$arch' is not one .NET publishes for here (amd64, arm64)" ;;
esac

# The first enabled `deb` source of this machine's apt that serves a suite: one-line .list entries, then
# deb822 .sources stanzas.
mirror_of() {
  local suite=$1 f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      { uri = ""; deb = 0; has = 0; on = 1
        for (j = 1; j <= NF; j++) {
          l = $j
          if (l ~ /^#/) continue
          if (l ~ /^Types:/ && l ~ /[ \t]deb([ \t]|$)/) deb = 1
          else if (l ~ /^Enabled:[ \t]*no/) on = 0
          else if (l ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", l); split(l, u, /[ \t]+/); uri = u[1] }
          else if (l ~ /^Suites:/) { sub(/^Suites:/, "", l); n = split(l, w, /[ \t]+/); for (k = 1; k <= n; k++) if (w[k] == s) has = 1 }
        }
        if (deb && has && on && uri != "") { print uri; exit } }' "$f"
  done
}
[ -n "$mirror" ] || mirror=$(mirror_of "$SUITE" | head -n 1)
[ -n "$mirror" ] || mirror=$PUBLIC_MIRROR
[ -n "$security_mirror" ] || security_mirror=$(mirror_of "$SUITE-security" | head -n 1)
[ -n "$security_mirror" ] || security_mirror=$PUBLIC_SECURITY_MIRROR

work=$(mktemp -d "${TMPDIR:-/var/tmp}/dolly-image.XXXXXXXX")
storage=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
container=""
cleanup() {
  if [ -n "$container" ]; then buildah "${storage[@]}" rm "$container" >/dev/null 2>&1 || true; fi
  # vfs layers are plain directories; buildah leaves nothing mounted once the container is removed.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs

# Runs a command inside the root file system with /proc, /sys and /dev as a container has them, in a mount
# namespace of its own so that nothing stays mounted if the build stops half way.
in_root() {
  # shellcheck disable=SC2016 # $root and $@ belong to the inner shell
  unshare --mount --propagation private -- sh -ec '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount -t sysfs sys "$root/sys"
    mount --rbind /dev "$root/dev"
    exec chroot "$root" /usr/bin/env -i PATH='"$IMAGE_PATH"' DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
  ' in_root "$rootfs" "$@"
}

step "publishing dolly for $rid (self-contained)"
nice dotnet publish "$REPO_ROOT/src/Dolly/Dolly.csproj" -c Release -r "$rid" --self-contained \
  -p:UseAppHost=true --artifacts-path "$work/artifacts" -o "$work/app" -nologo -clp:ErrorsOnly >&2
[ -x "$work/app/dolly" ] || die "dotnet publish made no $work/app/dolly"

step "debootstrap $SUITE ($arch, minbase) from $mirror"
nice debootstrap --variant=minbase --arch "$arch" "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

step "installing ${IMAGE_PACKAGES[*]} with $SUITE-updates and $SUITE-security from $security_mirror"
# The slim image's exclusions: no documentation (but the copyright files), manuals or translations.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/dolly-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
write_sources() {
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $1
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $2
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}
write_sources "$mirror" "$security_mirror"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# No service starts inside the build (nbd-client ships an init script).
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
apt_in_root() {
  in_root apt-get -y -qq -o Dpkg::Options::=--force-confold "$@" >>"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; die "apt-get $* failed in the root file system (log above)"; }
}
apt_in_root update
apt_in_root dist-upgrade
apt_in_root install --no-install-recommends "${IMAGE_PACKAGES[@]}"
apt_in_root clean
write_sources "$PUBLIC_MIRROR" "$PUBLIC_SECURITY_MIRROR"
rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs/etc/resolv.conf"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/apt/* "$rootfs"/var/log/dpkg.log "$rootfs"/var/log/alternatives.log "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# What debootstrap installed before the exclusions existed.
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
# A container runtime mounts its own /dev, /proc and /sys; leave the debootstrap device nodes out.
rm -rf "${rootfs:?}"/dev/*

step "adding /app"
cp -a "$work/app" "$rootfs/app"
chown -R 0:0 "$rootfs/app"
ln -s /app/dolly "$rootfs/usr/local/bin/dolly"
version=$(in_root dolly --version) || die "the published dolly does not run in the root file system"

step "committing $image_ref (dolly $version)"
container=$(buildah "${storage[@]}" from scratch)
mnt=$(buildah "${storage[@]}" mount "$container")
tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -cf - . \
  | tar -C "$mnt" --numeric-owner --xattrs --xattrs-include='*' --same-permissions -xf -
buildah "${storage[@]}" umount "$container" >/dev/null
buildah "${storage[@]}" config --os linux --arch "$arch" --env "PATH=$IMAGE_PATH" --workingdir / \
  --entrypoint '["dolly"]' --cmd '["--help"]' \
  --label org.opencontainers.image.title=dolly --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.base.name=debian:$SUITE-slim" "$container" >&2
buildah "${storage[@]}" commit --quiet --format docker --rm "$container" "$image_ref" >/dev/null
container=""
rm -f "$archive"
buildah "${storage[@]}" push --quiet "$image_ref" "docker-archive:$archive:$image_ref" >&2

if [ -n "$keep_rootfs" ]; then
  mv "$rootfs" "$keep_rootfs"
fi
step "wrote $archive ($image_ref, $(du -h "$archive" | cut -f1))"
echo "$archive"
