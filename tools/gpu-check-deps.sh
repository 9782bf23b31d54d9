#!/usr/bin/env bash
# Prepares .gpu-deps/ (git-ignored), the header-only dependencies tools/gpu-check.sh needs on a
# GPU machine that has CMake, a compiler, nvcc and PyTorch but no package access. Copied from
# this machine's Debian packages (nlohmann-json3-dev, catch2, libstb-dev, libcli11-dev,
# zlib1g-dev headers) with their CMake package files, laid out as one install prefix:
#   .gpu-deps/include/{nlohmann,catch2,stb,CLI,zlib.h,zconf.h}
#   .gpu-deps/share/cmake/nlohmann_json, .gpu-deps/lib/cmake/Catch2 (+ libCatch2WithMain.a, which its
#   targets file names), .gpu-deps/share/cmake/CLI11
# About 6 MB. Carry it with the working tree (device tool: carry [".gpu-deps"]).
set -euo pipefail
cd "$(dirname "$0")/.."
dst=.gpu-deps
die() { echo "gpu-check-deps: $*" >&2; exit 1; }
rm -rf "$dst"
mkdir -p "$dst/include" "$dst/share/cmake" "$dst/lib/cmake"
copy() {  # copy SRC DEST_DIR, naming the Debian package when SRC is missing
  [ -e "$1" ] || die "$1 not found (install the Debian package $3: bash .ci/install-deps)"
  cp -a "$1" "$2"
}
copy /usr/include/nlohmann "$dst/include/" nlohmann-json3-dev
copy /usr/share/cmake/nlohmann_json "$dst/share/cmake/" nlohmann-json3-dev
copy /usr/include/catch2 "$dst/include/" catch2
copy /usr/lib/cmake/Catch2 "$dst/lib/cmake/" catch2
copy /usr/lib/libCatch2WithMain.a "$dst/lib/" catch2  # named by Catch2Targets-none.cmake
copy /usr/include/stb "$dst/include/" libstb-dev
copy /usr/include/CLI "$dst/include/" libcli11-dev
if [ -d /usr/share/cmake/CLI11 ]; then cp -a /usr/share/cmake/CLI11 "$dst/share/cmake/"; fi
copy /usr/include/zlib.h "$dst/include/" zlib1g-dev
copy "$(ls /usr/include/zconf.h /usr/include/x86_64-linux-gnu/zconf.h 2>/dev/null | head -n 1)" "$dst/include/" zlib1g-dev
{
  echo "Prepared by tools/gpu-check-deps.sh on $(date -u +%FT%TZ) from:"
  dpkg-query -W -f='  ${Package} ${Version}\n' nlohmann-json3-dev catch2 libstb-dev libcli11-dev zlib1g-dev 2>/dev/null || true
} > "$dst/VERSIONS"
echo "gpu-check-deps: $(du -sh "$dst" | cut -f1) in $dst"
