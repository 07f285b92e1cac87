#!/bin/sh
# Installs fluxprm's build and test dependencies from Debian's archive (run as root).
# Idempotent: packages already present are left alone.
set -eu
# --long also installs what `make check-long` / `make fuzz` need (clang for libFuzzer).
PKGS="build-essential pkg-config libpcre2-dev libutf8proc-dev libjansson-dev libcurl4-openssl-dev libmicrohttpd-dev"
# --mpi also installs OpenMPI for the optional `make MPI=1` build (mpicc, mpirun); options may be combined.
# --blas also installs OpenBLAS for the optional `make BLAS=1` build (f32-weight GEMMs through cblas_sgemm).
for a in "$@"; do
  case "$a" in
    --long) PKGS="$PKGS clang" ;;
    --mpi) PKGS="$PKGS libopenmpi-dev openmpi-bin" ;;
    --blas) PKGS="$PKGS libopenblas-dev" ;;
    *) ;;
  esac
done
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
echo "install-deps: ok"
