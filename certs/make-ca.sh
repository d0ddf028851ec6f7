#!/usr/bin/env bash
# make-ca.sh DIR [--rsa] [--name "Common Name"]
# Creates the ztproxy device CA in DIR (see docs/certs.md).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$HERE/_common.sh"

usage() {
    cat <<EOF
usage: $PROG DIR [--rsa] [--name "Common Name"]

Creates a certificate authority in DIR (created if needed):
  DIR/ca.crt    CA certificate (10 years; ECDSA P-256, RSA-2048 with --rsa)
  DIR/ca.key    CA private key (mode 0600)
  DIR/crl.pem   certificate revocation list (initially empty)
  DIR/ca/       openssl ca database (index.txt, serial, crlnumber, openssl.cnf)
If DIR already holds a CA nothing is changed (a missing crl.pem is regenerated).

options:
  --rsa         RSA-2048 instead of ECDSA P-256
  --name NAME   subject common name (default "ztproxy device CA")
EOF
}

kind=ec name="ztproxy device CA" pos=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --rsa) kind=rsa ;;
        --name)
            [[ $# -ge 2 ]] || usage_error "--name needs a value"
            name=$2; shift ;;
        --name=*) name=${1#--name=} ;;
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
[[ -n $name ]] || usage_error "--name must not be empty"
[[ ${#name} -le 64 ]] || usage_error "--name is longer than 64 characters"
[[ $name != *[[:cntrl:]]* ]] || usage_error "--name must not contain control characters"
need_openssl

mkdir -p -- "$dir" || die "cannot create directory '$dir'"
dir=$(abs_dir "$dir")

if [[ -f $dir/ca.crt && -f $dir/ca.key ]]; then
    if [[ -f $dir/crl.pem ]]; then
        echo "CA already exists in $dir (nothing changed)"
        exit 0
    fi
    ensure_ca_db "$dir"
    lock_ca "$dir"
    make_tmp "$dir"
    gen_crl "$dir"
    echo "CA already exists in $dir; wrote missing $dir/crl.pem"
    exit 0
fi
if [[ -e $dir/ca.crt || -e $dir/ca.key ]]; then
    die "$dir holds only one of ca.crt and ca.key; refusing to overwrite it (move it away first)"
fi
if [[ -s $dir/ca/index.txt ]]; then
    die "$dir/ca/index.txt is not empty but there is no CA certificate/key; refusing to reuse that database (move $dir/ca away first)"
fi

ensure_ca_db "$dir"
lock_ca "$dir"
make_tmp "$dir"
# Another make-ca.sh may have won the race for the lock.
if [[ -f $dir/ca.crt && -f $dir/ca.key ]]; then
    echo "CA already exists in $dir (nothing changed)"
    exit 0
fi

gen_key "$kind" "$ZT_TMP/ca.key"
run "CA certificate creation" openssl req -new -x509 -config "$dir/ca/openssl.cnf" \
    -key "$ZT_TMP/ca.key" -sha256 -days 3650 -subj "/CN=$(subj_escape "$name")" \
    -extensions v3_ca -out "$ZT_TMP/ca.crt"
chmod 644 "$ZT_TMP/ca.crt"
mv -f -- "$ZT_TMP/ca.key" "$dir/ca.key"
mv -f -- "$ZT_TMP/ca.crt" "$dir/ca.crt"
gen_crl "$dir"

if [[ $kind == rsa ]]; then alg="RSA-2048"; else alg="ECDSA P-256"; fi
echo "wrote CA $dir/ca.crt ($alg, \"$name\"), key $dir/ca.key, CRL $dir/crl.pem"
