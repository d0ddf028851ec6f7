#!/usr/bin/env bash
# make-device.sh DIR DEVICE_ID [options]
# Issues a device (client) certificate from DIR's CA (see docs/certs.md).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$HERE/_common.sh"

usage() {
    cat <<EOF
usage: $PROG DIR DEVICE_ID [--days N] [--start YYYYMMDDHHMMSSZ] [--end YYYYMMDDHHMMSSZ]
                 [--no-client-auth] [--no-eku] [--rsa] [--force]

Issues a device certificate from the CA in DIR (recorded in the CA database,
so it can be revoked with revoke-device.sh):
  DIR/devices/DEVICE_ID.crt   certificate: CN=DEVICE_ID (if at most 64 chars),
                              SAN URI:urn:ztproxy:device:DEVICE_ID, EKU clientAuth
  DIR/devices/DEVICE_ID.key   private key (mode 0600)
  DIR/devices/DEVICE_ID.pem   certificate + key (mode 0600, for curl --cert)
DEVICE_ID: 1-128 characters [A-Za-z0-9._-], starting with a letter or digit.
If the certificate already exists nothing is done unless --force is given.

options:
  --days N            validity in days from now (default 365)
  --start TIME        notBefore, e.g. 20200101000000Z (UTC)
  --end TIME          notAfter, e.g. 20200201000000Z (UTC)
  --no-client-auth    EKU serverAuth only (no clientAuth) -- for negative tests
  --no-eku            no extendedKeyUsage extension at all -- for negative tests
  --rsa               RSA-2048 key instead of ECDSA P-256
  --force             issue a new key and certificate even if one exists
                      (the previous certificate is not revoked)
EOF
}

kind=ec days="" start="" end="" eku=clientAuth force=0 pos=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --rsa) kind=rsa ;;
        --force) force=1 ;;
        --no-client-auth) [[ $eku == none ]] || eku=serverAuth ;;
        --no-eku) eku=none ;;
        --days | --start | --end)
            [[ $# -ge 2 ]] || usage_error "$1 needs a value"
            case $1 in
                --days) days=$2 ;;
                --start) start=$2 ;;
                --end) end=$2 ;;
            esac
            shift ;;
        --days=*) days=${1#*=} ;;
        --start=*) start=${1#*=} ;;
        --end=*) end=${1#*=} ;;
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
if [[ -n $days ]]; then
    if [[ ! $days =~ ^[0-9]{1,6}$ ]] || ((10#$days < 1)); then
        usage_error "--days: expected a positive number of days, got '$days'"
    fi
    days=$((10#$days))
    [[ -z $end ]] || usage_error "--days and --end are mutually exclusive"
fi
[[ -z $start ]] || check_date "$start" --start
[[ -z $end ]] || check_date "$end" --end
need_openssl

# Validity: openssl ca counts -days from now, not from -startdate, so turn
# everything into an explicit start/end when a start is given.
validity=()
if [[ -n $start || -n $end ]]; then
    [[ -n $start ]] || start=$(now_stamp)
    [[ -n $end ]] || end=$(date_plus_days "$start" "${days:-365}")
    [[ $end > $start ]] || usage_error "--end ($end) must be after the start ($start)"
    validity=(-startdate "$start" -enddate "$end")
else
    validity=(-days "${days:-365}")
fi

dir=$(require_ca "$dir")
crt=$dir/devices/$id.crt key=$dir/devices/$id.key pem=$dir/devices/$id.pem

if [[ -f $crt && $force -eq 0 ]]; then
    echo "device certificate $crt already exists (nothing changed; --force reissues)"
    exit 0
fi

mkdir -p -- "$dir/devices" || die "cannot create $dir/devices"
ensure_ca_db "$dir"
lock_ca "$dir"
make_tmp "$dir"
if [[ -f $crt && $force -eq 0 ]]; then   # created concurrently while we waited
    echo "device certificate $crt already exists (nothing changed; --force reissues)"
    exit 0
fi

ext=$ZT_TMP/ext.cnf
{
    echo "[ device_ext ]"
    echo "basicConstraints       = critical, CA:false"
    echo "keyUsage               = critical, digitalSignature"
    [[ $eku == none ]] || echo "extendedKeyUsage       = $eku"
    echo "subjectAltName         = URI:urn:ztproxy:device:$id"
    echo "subjectKeyIdentifier   = hash"
    echo "authorityKeyIdentifier = keyid, issuer"
} >"$ext"

# X.509 limits commonName to 64 characters. A longer id lives only in the SAN
# URI; the CN then holds a marker that is not a valid device id, so a proxy
# configured with device_id.source "subject_cn" refuses the certificate rather
# than reading a truncated (possibly another device's) id.
if [[ ${#id} -le 64 ]]; then
    cn=$id
else
    cn=$ZT_LONG_ID_CN
    printf '%s: note: DEVICE_ID is longer than 64 characters; it is only in the SAN URI (CN="%s")\n' \
        "$PROG" "$cn" >&2
fi

gen_key "$kind" "$ZT_TMP/dev.key"
run "certificate request" openssl req -new -config "$dir/ca/openssl.cnf" \
    -key "$ZT_TMP/dev.key" -subj "/CN=$(subj_escape "$cn")" -out "$ZT_TMP/dev.csr"
ossl_ca "$dir" "signing the device certificate" -notext -in "$ZT_TMP/dev.csr" \
    -out "$ZT_TMP/dev.crt" -extfile "$ext" -extensions device_ext "${validity[@]}"
chmod 644 "$ZT_TMP/dev.crt"
(umask 077 && cat "$ZT_TMP/dev.crt" "$ZT_TMP/dev.key" >"$ZT_TMP/dev.pem")
chmod 600 "$ZT_TMP/dev.pem"

mv -f -- "$ZT_TMP/dev.key" "$key"
mv -f -- "$ZT_TMP/dev.crt" "$crt"
mv -f -- "$ZT_TMP/dev.pem" "$pem"

serial=$(cert_serial "$crt") || serial="?"
until=$(openssl x509 -in "$crt" -noout -enddate 2>/dev/null) || until="notAfter=?"
echo "wrote $crt (+ $id.key, $id.pem): serial $serial, valid until ${until#notAfter=}"
