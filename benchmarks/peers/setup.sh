#!/usr/bin/env bash
# Build one peer's virtual environment for the benchmarks: setup.sh NAME DIR
# (NAME: careamics | csbdeep | nanopyx | skimage). Idempotent: a stamp file marks a finished venv.
# The product never imports these; benchmarks/run.py calls their python as a separate process.
set -euo pipefail
name=$1
dir=$2
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
stamp=$dir/.done-$name
[ -f "$stamp" ] && { echo "peer $name: ready ($dir)"; exit 0; }
rm -rf "$dir"
"$py" -m venv "$dir"
pip="$dir/bin/python -m pip install -q --disable-pip-version-check"
case $name in
  careamics)
    # torch first (the local CPU wheel); careamics without deps (its torchvision pin cannot be met on CPU
    # torch 2.13), then its other dependencies, then a torchvision stand-in on the path.
    $pip "torch==2.13.0"
    $pip --no-deps "careamics==0.3.5"
    $pip "bioimageio.core==0.11.0" "pydantic<2.14" "lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3" "matplotlib" \
      "microssim<=0.0.5" "numpy<=2.4.6" "pillow" "psutil" "pyyaml" "scikit-image<=0.26.0" "tifffile" \
      "torchmetrics<1.9.0" "zarr>=3,<4"
    site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$here/shims" > "$site/fmc_bench_torchvision_shim.pth"
    ;;
  csbdeep)
    $pip "tensorflow-cpu==2.21.0" "csbdeep==0.8.2" "tifffile" ;;
  nanopyx)
    $pip "nanopyx==2.1.5" "numba" ;;  # numba: its best CPU configuration (else pure-Python fallbacks)
  skimage)
    $pip "scikit-image==0.26.0" "numpy" ;;
  *) echo "unknown peer: $name" >&2; exit 2 ;;
esac
touch "$stamp"
echo "peer $name: installed in $dir"
