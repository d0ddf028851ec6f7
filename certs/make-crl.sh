#!/usr/bin/env bash
# make-crl.sh DIR
# Regenerates DIR/crl.pem from the CA database (see docs/certs.md).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$HERE/_common.sh"

usage() {
    cat <<EOF
usage: $PROG DIR

Regenerates DIR/crl.pem, the revocation list of the CA in DIR, valid for 30
days. Run it (and send SIGHUP to ztproxy) well before the current CRL's
"Next Update": an expired CRL makes every client certificate fail.
EOF
}

pos=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --) shift; pos+=("$@"); break ;;
        -?*) usage_error "unknown option: $1" ;;
        *) pos+=("$1") ;;
    esac
    shift
done
[[ ${#pos[@]} -ge 1 ]] || usage_error "missing DIR"
[[ ${#pos[@]} -eq 1 ]] || usage_error "unexpected argument: ${pos[1]}"
dir=${pos[0]}
[[ -n $dir ]] || usage_error "DIR must not be empty"
need_openssl

dir=$(require_ca "$dir")
ensure_ca_db "$dir"
lock_ca "$dir"
make_tmp "$dir"
gen_crl "$dir"

n=$(awk -F'\t' '$1 == "R"' "$dir/ca/index.txt" | wc -l)
next=$(openssl crl -in "$dir/crl.pem" -noout -nextupdate 2>/dev/null) || next="nextUpdate=?"
echo "wrote $dir/crl.pem ($((n)) revoked, next update ${next#nextUpdate=})"
