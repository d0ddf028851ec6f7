#!/usr/bin/env bash
# make-server.sh DIR NAME [NAME...] [--out BASENAME] [--rsa]
# Issues the proxy's TLS server certificate from DIR's CA (see docs/certs.md).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=_common.sh
. "$HERE/_common.sh"

usage() {
    cat <<EOF
usage: $PROG DIR NAME [NAME...] [--out BASENAME] [--rsa]

Issues a TLS server certificate from the CA in DIR, valid 825 days:
  DIR/BASENAME.crt   certificate (SAN: DNS:NAME, or IP:NAME for IPv4/IPv6
                     literals; EKU serverAuth)
  DIR/BASENAME.key   private key (mode 0600)
BASENAME defaults to "server". If the certificate exists and covers exactly
the same names (and still verifies against the CA, matches its key, and is
RSA if --rsa is given) nothing is done; otherwise a new key and certificate
are issued.

options:
  --out BASENAME   output file names (default "server")
  --rsa            RSA-2048 key instead of ECDSA P-256
EOF
}

kind=ec base=server pos=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --rsa) kind=rsa ;;
        --out)
            [[ $# -ge 2 ]] || usage_error "--out needs a value"
            base=$2; shift ;;
        --out=*) base=${1#--out=} ;;
        --) shift; pos+=("$@"); break ;;
        -?*) usage_error "unknown option: $1" ;;
        *) pos+=("$1") ;;
    esac
    shift
done
[[ ${#pos[@]} -ge 1 ]] || usage_error "missing DIR and NAME"
[[ ${#pos[@]} -ge 2 ]] || usage_error "missing NAME (a DNS name or IP address)"
dir=${pos[0]}
[[ -n $dir ]] || usage_error "DIR must not be empty"
if [[ ! $base =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]]; then
    usage_error "--out: invalid BASENAME '$base' (letters, digits, '.', '_', '-'; no '/')"
fi
case $base in
    ca | crl) usage_error "--out: '$base' would overwrite the CA's files" ;;
esac

ipv4_re='^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
ipv6_re='^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$'
dns_re='^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$'
san=() seen=" "
for n in "${pos[@]:1}"; do
    if [[ $n =~ ^\[(.*)\]$ ]]; then n=${BASH_REMATCH[1]}; fi
    if [[ $n =~ $ipv4_re || $n =~ $ipv6_re ]]; then
        entry="IP:$n"
    elif [[ $n =~ $dns_re && ${#n} -le 253 ]]; then
        entry="DNS:$n"
    else
        usage_error "invalid NAME '$n' (expected a DNS name, an IPv4 or an IPv6 address)"
    fi
    [[ $seen == *" $entry "* ]] && continue
    seen+="$entry "
    san+=("$entry")
done
san_csv=$(IFS=,; printf '%s' "${san[*]}")
cn=${pos[1]}
if [[ $cn =~ ^\[(.*)\]$ ]]; then cn=${BASH_REMATCH[1]}; fi
[[ ${#cn} -le 64 ]] || cn="ztproxy server"
need_openssl

dir=$(require_ca "$dir")
crt=$dir/$base.crt key=$dir/$base.key
ensure_ca_db "$dir"
lock_ca "$dir"
make_tmp "$dir"

# san_list FILE x509|req: the certificate's SAN entries, canonical form as
# printed by openssl (IPv6 expanded), lower-cased, one per line, sorted.
san_list() {
    openssl "$2" -in "$1" -noout -text 2>/dev/null |
        awk '/X509v3 Subject Alternative Name/ { getline; print; exit }' |
        sed 's/^ *//; s/, /\n/g' | tr '[:upper:]' '[:lower:]' | sort -u
}

reason="new"
if [[ -f $crt && -f $key ]]; then
    # What would the requested names look like in a certificate?
    gen_key ec "$ZT_TMP/probe.key"
    run "SAN check" openssl req -new -config "$dir/ca/openssl.cnf" -key "$ZT_TMP/probe.key" \
        -subj "/CN=probe" -addext "subjectAltName=$san_csv" -out "$ZT_TMP/probe.csr"
    want=$(san_list "$ZT_TMP/probe.csr" req)
    have=$(san_list "$crt" x509)
    if [[ -z $want || $want != "$have" ]]; then
        reason="names changed"
    elif [[ $kind == rsa && $(cert_key_kind "$crt") != rsa ]]; then
        reason="--rsa given but the existing key is not RSA"
    elif ! key_matches_cert "$key" "$crt"; then
        reason="$base.key does not match $base.crt"
    elif ! openssl verify -CAfile "$dir/ca.crt" -purpose sslserver "$crt" >/dev/null 2>&1; then
        reason="existing certificate does not verify against $dir/ca.crt (expired or other CA)"
    else
        echo "server certificate $crt is up to date (${san[*]}; nothing changed)"
        exit 0
    fi
elif [[ -f $crt || -f $key ]]; then
    reason="incomplete pair"
fi

ku="critical, digitalSignature"
[[ $kind != rsa ]] || ku="critical, digitalSignature, keyEncipherment"
ext=$ZT_TMP/ext.cnf
cat >"$ext" <<EOF
[ server_ext ]
basicConstraints       = critical, CA:false
keyUsage               = $ku
extendedKeyUsage       = serverAuth
subjectAltName         = $san_csv
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer
EOF

gen_key "$kind" "$ZT_TMP/srv.key"
run "certificate request" openssl req -new -config "$dir/ca/openssl.cnf" \
    -key "$ZT_TMP/srv.key" -subj "/O=ztproxy server/CN=$(subj_escape "$cn")" -out "$ZT_TMP/srv.csr"
ossl_ca "$dir" "signing the server certificate" -notext -days 825 -in "$ZT_TMP/srv.csr" \
    -out "$ZT_TMP/srv.crt" -extfile "$ext" -extensions server_ext
chmod 644 "$ZT_TMP/srv.crt"
mv -f -- "$ZT_TMP/srv.key" "$key"
mv -f -- "$ZT_TMP/srv.crt" "$crt"

note=""
[[ $reason == new ]] || note=" (reissued: $reason)"
echo "wrote $crt and $key for ${san[*]}$note"
