#!/usr/bin/env bash
# revoke-device.sh DIR DEVICE_ID
# Revokes a device certificate and regenerates DIR/crl.pem (see docs/certs.md).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$HERE/_common.sh"

usage() {
    cat <<EOF
usage: $PROG DIR DEVICE_ID

Revokes DIR/devices/DEVICE_ID.crt in the CA database (reason keyCompromise),
together with any older, still valid certificate issued for the same device
(e.g. before a make-device.sh --force), and regenerates DIR/crl.pem.
Revoking an already revoked device is not an error. Send SIGHUP to ztproxy
afterwards so that it reloads the CRL.
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
[[ ${#pos[@]} -ge 1 ]] || usage_error "missing DIR and DEVICE_ID"
[[ ${#pos[@]} -ge 2 ]] || usage_error "missing DEVICE_ID"
[[ ${#pos[@]} -eq 2 ]] || usage_error "unexpected argument: ${pos[2]}"
dir=${pos[0]} id=${pos[1]}
[[ -n $dir ]] || usage_error "DIR must not be empty"
if [[ ! $id =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]]; then
    printf '%s: invalid DEVICE_ID %q: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$\n' "$PROG" "$id" >&2
    usage >&2
    exit 2
fi
need_openssl

dir=$(require_ca "$dir")
crt=$dir/devices/$id.crt
[[ -f $crt ]] || die "unknown device '$id': $crt does not exist"
ensure_ca_db "$dir"
lock_ca "$dir"
make_tmp "$dir"

serial=$(cert_serial "$crt") || die "cannot read $crt"
status=$(db_status "$dir" "$serial")
[[ -n $status ]] || die "$crt (serial $serial) is not in the database of the CA in $dir; was it issued by another CA?"

if [[ $status == R ]]; then
    msg="device $id was already revoked (serial $serial)"
else
    ossl_ca "$dir" "revoking serial $serial" -revoke "$crt" -crl_reason keyCompromise
    msg="revoked device $id (serial $serial)"
fi

# Earlier certificates of the same device (make-device.sh --force keeps them
# valid): same subject, still valid in the database, and the device's SAN URI.
subj="/CN=$id"
[[ ${#id} -le 64 ]] || subj="/CN=$ZT_LONG_ID_CN"
others=$(awk -F'\t' -v subj="$subj" -v cur="$serial" \
    '$1 == "V" && $6 == subj && toupper($4) != toupper(cur) { print $4 }' "$dir/ca/index.txt")
n_others=0
for s in $others; do
    old=$dir/ca/newcerts/$s.pem
    if [[ ! -f $old ]]; then
        printf '%s: warning: certificate serial %s (subject %s) not found in %s; not checked\n' \
            "$PROG" "$s" "$subj" "$dir/ca/newcerts" >&2
    elif cert_has_device_uri "$old" "$id"; then
        ossl_ca "$dir" "revoking older serial $s" -revoke "$old" -crl_reason keyCompromise
        n_others=$((n_others + 1))
    fi
done
((n_others == 0)) || msg+=" and $n_others older certificate(s) of it"

gen_crl "$dir"
echo "$msg; wrote $dir/crl.pem"
