#!/usr/bin/env bash
# Sign in to the demo like a browser would, with curl: follow the redirect to
# the development identity provider, submit its login form, come back to
# /.zt/callback, and keep the session cookie in deploy/demo/run/cookies.USER.
#   deploy/demo/login.sh alice [https://wiki.corp.example:8443/]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run=$here/run
user=${1:?usage: login.sh USER [URL]}
url=${2:-https://wiki.corp.example:${DEMO_PROXY_PORT:-8443}/}
pass="$user-dev-pw"
jar=$run/cookies.$user
idpjar=$run/idp-cookies.$user
host=$(printf '%s' "$url" | sed -E 's#^https://([^/:]+).*#\1#')
port=$(printf '%s' "$url" | sed -nE 's#^https://[^/:]+:([0-9]+).*#\1#p'); port=${port:-443}
tls=(--resolve "$host:$port:127.0.0.1" --cacert "$run/pki/ca.crt" --cert "$run/pki/devices/demo-laptop.pem")
rm -f "$jar" "$idpjar"

# 1. the proxy sends us to the provider (and sets the login cookie)
loc=$(curl -sS -o /dev/null -w '%{redirect_url}' "${tls[@]}" -c "$jar" "$url")
[ -n "$loc" ] || { echo "login: the proxy did not redirect (already allowed?)" >&2; exit 1; }
# 2. the provider's login form
form=$(curl -sS -L -c "$idpjar" -b "$idpjar" "$loc")
action=$(printf '%s' "$form" | sed -nE 's#.*<form[^>]*action="([^"]+)".*#\1#p' | head -n 1)
[ -n "$action" ] || { echo "login: no login form at the provider" >&2; exit 1; }
# 3. submit it; the provider redirects back to /.zt/callback
cb=$(curl -sS -o /dev/null -w '%{redirect_url}' -c "$idpjar" -b "$idpjar" \
       --data-urlencode "login=$user" --data-urlencode "password=$pass" "$action")
while [ -n "$cb" ] && [ "${cb#https://}" = "$cb" ]; do
  cb=$(curl -sS -o /dev/null -w '%{redirect_url}' -c "$idpjar" -b "$idpjar" "$cb")
done
[ -n "$cb" ] || { echo "login: the provider refused the login" >&2; exit 1; }
# 4. the callback sets the session cookie
curl -sS -o /dev/null "${tls[@]}" -b "$jar" -c "$jar" "$cb"
grep -q zt_session "$jar" && echo "signed in as $user (cookies in $jar)"
