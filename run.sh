#!/usr/bin/env bash
# The two commands of the README.
#   ./run.sh demo   install what is missing, build, start the demo (Ctrl-C stops it)
#   ./run.sh test   install what is missing, build, run every test
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
  demo) tools/setup.sh && exec deploy/demo/demo.sh ;;
  test) tools/setup.sh && exec tests/run-all.sh ;;
  *) echo "usage: ./run.sh demo | test" >&2; exit 2 ;;
esac
