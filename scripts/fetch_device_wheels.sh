#!/usr/bin/env bash
# Fetch, here (where pip reaches a package index), the wheels that scripts/device_check.sh installs on a lent GPU
# machine (Python 3.12, x86_64, no network) beside what its image already has: grain with array_record and
# portpicker, gliner 0.2.29, tensorboardX, and transformers 5.16.1 (gliner 0.2.29 requires transformers < 5.17; the
# image has 5.17). Versions come from constraints.txt; the wheels go to .device-wheels/ (git-ignored), at most 64 MiB.
#
#   scripts/fetch_device_wheels.sh        then carry .device-wheels with the working tree
set -euo pipefail
cd "$(dirname "$0")/.."

dest=.device-wheels
packages=(grain array_record portpicker gliner tensorboardX transformers)
platforms=()
for tag in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
    manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done

rm -rf "$dest"
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -c constraints.txt -d "$dest" "${packages[@]}"

size_kib=$(du -sk "$dest" | cut -f1)
ls -1 "$dest"
echo "$dest: $((size_kib / 1024)) MiB"
if [ "$size_kib" -gt $((64 * 1024)) ]; then
  echo "error: more than the 64 MiB a device call carries" >&2
  exit 1
fi
