#!/usr/bin/env bash
# Upstream-compatible entry point; the launcher itself lives in scripts/msrun_launcher.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/scripts/msrun_launcher.sh" "$@"
