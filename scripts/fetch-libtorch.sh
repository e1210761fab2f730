#!/usr/bin/env bash
# Finds or installs a libtorch and records where it is in build/libtorch.env,
# which the Makefile reads to build the shim (internal/torch/shim).
set -euo pipefail

usage() {
  cat <<'TXT'
usage: scripts/fetch-libtorch.sh [--download VARIANT] [--version X.Y.Z]

Finds a libtorch, in this order, and writes build/libtorch.env:
  1. $LIBTORCH: a libtorch directory you give (with share/cmake/Torch inside);
  2. the libtorch inside an importable Python torch ($PYTHON, default python3,
     then /usr/bin/python3): a machine with a CUDA PyTorch gets its CUDA libtorch;
  3. Debian/Ubuntu: the system's libtorch-dev, installed with apt-get (as root,
     or through sudo) together with an optimised BLAS (libopenblas0-pthread),
     cmake, g++ and Gloo's headers (libgloo-dev, for multi-process training)
     when missing.

  --download VARIANT  instead fetch the official libtorch archive
                      (cpu, cu118, cu121, ...) into build/libtorch. Needs internet
                      access to download.pytorch.org; this path is not exercised
                      by the project's CI, which has no such access.
  --version X.Y.Z     libtorch version for --download (default 2.1.2)
TXT
}

download=""
version="2.1.2"
while [ $# -gt 0 ]; do
  case "$1" in
    --download) download="${2:?--download needs a variant such as cpu or cu121}"; shift 2 ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fetch-libtorch: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/build/libtorch.env"
mkdir -p "$root/build"

# write SOURCE CMAKE_PREFIX: records the choice atomically.
write() {
  local source="$1" prefix="$2"
  local tmp="$out.tmp.$$"
  {
    echo "# written by scripts/fetch-libtorch.sh"
    echo "TORCH_SOURCE='$source'"
    echo "TORCH_CMAKE_PREFIX='$prefix'"
  } > "$tmp"
  mv "$tmp" "$out"
  echo "fetch-libtorch: using libtorch from $source ($prefix)"
}

has_config() { [ -f "$1/Torch/TorchConfig.cmake" ] || [ -f "$1/TorchConfig.cmake" ]; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

# Build tools for the shim, and libjpeg-turbo's headers (lcpdiff decodes
# JPEG with the library Pillow uses), from apt when they are missing.
ensure_tools() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  [ -f /usr/include/jpeglib.h ] || ls /usr/include/*/jpeglib.h >/dev/null 2>&1 || missing+=(libjpeg-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
      apt_install "${missing[@]}"
    else
      echo "fetch-libtorch: ${missing[*]} missing and no apt-get to install them" >&2
      exit 1
    fi
  fi
  ensure_gloo
}

# Gloo's headers, for data-parallel training: libtorch's c10d headers include
# them, and Debian ships them apart (libgloo-dev). Optional: without them the
# shim still builds, and a multi-process run says what is missing.
ensure_gloo() {
  [ -f /usr/include/gloo/config.h ] && return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  apt_install libgloo-dev ||
    echo "fetch-libtorch: warning: could not install libgloo-dev; multi-process training will be unavailable" >&2
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || return 1
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

if [ -n "$download" ]; then
  ensure_tools
  url="https://download.pytorch.org/libtorch/$download/libtorch-cxx11-abi-shared-with-deps-$version%2B$download.zip"
  [ "$download" = cpu ] && url="https://download.pytorch.org/libtorch/cpu/libtorch-cxx11-abi-shared-with-deps-$version%2Bcpu.zip"
  echo "fetch-libtorch: downloading $url"
  zip="$root/build/libtorch-$version-$download.zip"
  if ! curl -fL --retry 3 -o "$zip.part" "$url"; then
    rm -f "$zip.part"
    echo "fetch-libtorch: download failed (no internet access, or no such variant/version)" >&2
    exit 1
  fi
  mv "$zip.part" "$zip"
  rm -rf "$root/build/libtorch"
  (cd "$root/build" && unzip -q "$zip")
  write "download $download $version" "$root/build/libtorch/share/cmake"
  exit 0
fi

if [ -n "${LIBTORCH:-}" ]; then
  if has_config "$LIBTORCH/share/cmake"; then
    ensure_tools
    write "LIBTORCH=$LIBTORCH" "$LIBTORCH/share/cmake"
    exit 0
  fi
  echo "fetch-libtorch: LIBTORCH=$LIBTORCH has no share/cmake/Torch/TorchConfig.cmake" >&2
  exit 1
fi

for py in ${PYTHON:-python3} /usr/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  prefix="$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" || continue
  if has_config "$prefix"; then
    ensure_tools
    write "python torch ($py)" "$prefix"
    exit 0
  fi
done

system_prefix() {
  for d in /usr/lib/*/cmake/Torch /usr/lib/cmake/Torch /usr/local/lib/cmake/Torch; do
    if [ -f "$d/TorchConfig.cmake" ]; then dirname "$d"; return 0; fi
  done
  return 1
}

if ! prefix="$(system_prefix)"; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "fetch-libtorch: installing libtorch-dev and OpenBLAS with apt-get"
    if ! apt_install libtorch-dev libopenblas0-pthread cmake g++ libjpeg-dev libgloo-dev; then
      echo "fetch-libtorch: apt-get could not install libtorch-dev (run as root, or set LIBTORCH, or use --download)" >&2
      exit 1
    fi
  fi
  prefix="$(system_prefix)" || {
    echo "fetch-libtorch: no libtorch found: set LIBTORCH=/path/to/libtorch, install PyTorch, or run with --download cpu" >&2
    exit 1
  }
fi
# Debian's libtorch runs its matrix products on whichever BLAS is installed:
# make sure it is an optimised one, not the reference BLAS.
if command -v apt-get >/dev/null 2>&1 && ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
  apt_install libopenblas0-pthread || echo "fetch-libtorch: warning: could not install libopenblas0-pthread; matrix products will be slow" >&2
fi
ensure_tools
write "system (apt libtorch-dev)" "$prefix"
