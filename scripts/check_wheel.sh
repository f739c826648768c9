#!/usr/bin/env bash
# Build the wheel, install it WITHOUT -e into a fresh virtual environment, and run the commands
# a pip user runs first: `vocalatent pipelines`, `vocalatent data list` and a short end-to-end
# `vocalatent embed` on synthetic songs. The venv sees the machine's site-packages (torch,
# numpy, ... come from there), so the script checks that `vocalatent` imported in it is the
# wheel's copy and not an editable install of this checkout. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir "$t/src"
# the working tree as git sees it (tracked + untracked, not ignored), symlinks kept
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$t/src"
else
  cp -a . "$t/src"
fi
"$PY" -m pip wheel -q --no-deps -w "$t/dist" "$t/src" >"$t/wheel.log" 2>&1 || { cat "$t/wheel.log"; echo "wheel does not build"; exit 1; }
"$PY" -m venv --system-site-packages "$t/venv"
VPY="$t/venv/bin/python"
"$VPY" -m pip install -q --no-deps --force-reinstall "$t"/dist/vocalatent-*.whl
cd "$t"   # away from the checkout, so that no ./vocalatent shadows the install
unset PYTHONPATH
where=$("$VPY" -c "import vocalatent; print(vocalatent.__file__)")
case "$where" in
  "$t/venv/"*) echo "wheel install: vocalatent imported from $where" ;;
  *) echo "wheel install: vocalatent imported from $where, not from the venv"; exit 1 ;;
esac
VL="$t/venv/bin/vocalatent"
"$VL" pipelines >"$t/pipelines.txt"
grep -q "^default " "$t/pipelines.txt" || { echo "vocalatent pipelines: no default preset"; exit 1; }
"$VL" data list >"$t/data.txt"
grep -q "^zebra_finch_song " "$t/data.txt" || { echo "vocalatent data list: no manifests"; exit 1; }
"$VPY" -c "from vocalatent.audio.synthetic import write_synthetic_dataset as w; w('$t/rec', n_files=2, n_syllables=12, sr=32000, random_state=0)"
printf '[model]\nmax_epochs = 3\nn_restarts = 1\n' >"$t/tiny.toml"
export VOCALATENT_NO_PROGRESS=1
"$VL" embed "$t/rec" -o "$t/out" --config "$t/tiny.toml" --device cpu --no-figures -q | tee "$t/embed.log"
[ -s "$t/out/embedding.nc" ] || { echo "vocalatent embed wrote no embedding.nc"; exit 1; }
echo "wheel install: pipelines, data list and embed ran from the installed wheel"
