#!/usr/bin/env bash
# Installs, only where missing, the real programs the tests run against. Idempotent; needs root (or sudo)
# and Debian's package mirror.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have kubectl || need+=(kubernetes-client)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
