#!/usr/bin/env bash
# Smoke test of the ztproxy dev IdP: starts it on a free port and plays the
# part of an OIDC client (the proxy) with curl: discovery, code flow + PKCE,
# token exchange with client_secret_basic, ID token verified against the JWKS,
# userinfo, SSO, prompt=login, acr_values=mfa, key rotation, minting, RP-initiated
# logout with back-channel logout delivered over mutual TLS, /dev/logout.
# Needs: bash, curl, node (>= 18.17), openssl (for the mTLS part).
# Usage: deploy/dev-idp/smoke.sh      (exit 0 = pass; SMOKE_KEEP=1 keeps the work dir)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
H="node $HERE/test/smoke_helper.mjs"

if [ ! -d "$HERE/node_modules/oidc-provider" ]; then
  echo "smoke: node_modules missing, running npm ci" >&2
  (cd "$HERE" && npm ci --omit=dev --no-audit --no-fund >&2)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dev-idp-smoke.XXXXXX")"
IDP_PID=""
RECV_PID=""
cleanup() {
  local rc=$?
  [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null || true
  [ -n "$IDP_PID" ] && kill "$IDP_PID" 2>/dev/null || true
  if [ $rc -ne 0 ] || [ -n "${SMOKE_KEEP:-}" ]; then
    if [ $rc -ne 0 ]; then
      echo "--- dev-idp stderr ---" >&2
      tail -n 40 "$WORK/idp.err" 2>/dev/null >&2 || true
    fi
    [ $rc -ne 0 ] && echo "smoke: FAIL (work dir kept: $WORK)" >&2
    [ $rc -eq 0 ] && echo "smoke: work dir kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

step() { echo "smoke: $*"; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

PORT="$($H free-port)"
APP_PORT="$($H free-port)"
ISSUER="http://127.0.0.1:$PORT"
REDIRECT="https://app.test:$APP_PORT/.zt/callback"
POST_LOGOUT="https://app.test:$APP_PORT/.zt/logout/done"
BACKCHANNEL="https://app.test:$APP_PORT/.zt/backchannel-logout"

# ---------------------------------------------------------------- certificates for the mTLS receiver
HAVE_MTLS=0
if command -v openssl >/dev/null 2>&1; then
  (
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=smoke test CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=app.test" \
      -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:app.test\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=dev-idp" \
      -keyout idp-client.key -out idp-client.csr
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in idp-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile client.ext -out idp-client.crt
  ) >/dev/null 2>&1 && HAVE_MTLS=1
fi
[ $HAVE_MTLS = 1 ] || step "openssl unavailable: skipping the back-channel mTLS checks"

# ---------------------------------------------------------------- clients file
cat > "$WORK/clients.json" <<EOF
{ "clients": [
  { "client_id": "ztproxy", "client_secret": "ztproxy-dev-secret",
    "redirect_uris": ["$REDIRECT"],
    "post_logout_redirect_uris": ["$POST_LOGOUT"],
    "backchannel_logout_uri": "$BACKCHANNEL",
    "backchannel_logout_session_required": true,
    "backchannel_tls": { "cert": "idp-client.crt", "key": "idp-client.key", "ca": "ca.crt" } },
  { "client_id": "ztproxy-es", "client_secret": "ztproxy-es-secret",
    "redirect_uris": ["$REDIRECT"],
    "id_token_signed_response_alg": "ES256" }
] }
EOF

# ---------------------------------------------------------------- start
if [ $HAVE_MTLS = 1 ]; then
  $H mtls-receiver "$APP_PORT" "$WORK/server.crt" "$WORK/server.key" "$WORK/ca.crt" "$WORK/backchannel.log" \
    > "$WORK/recv.out" 2>&1 &
  RECV_PID=$!
fi

node "$HERE/server.js" --port "$PORT" --issuer "$ISSUER" --clients "$WORK/clients.json" \
  --users "$HERE/users.json" --state-dir "$WORK/state" > "$WORK/idp.out" 2> "$WORK/idp.err" &
IDP_PID=$!
for _ in $(seq 1 200); do
  grep -q "^dev-idp ready $ISSUER\$" "$WORK/idp.out" 2>/dev/null && break
  kill -0 "$IDP_PID" 2>/dev/null || fail "dev-idp exited during start-up"
  sleep 0.1
done
grep -q "^dev-idp ready $ISSUER\$" "$WORK/idp.out" || fail "no ready line"
step "started pid $IDP_PID on $ISSUER"
[ "$(stat -c %a "$WORK/state/keys.json")" = 600 ] || fail "keys.json is not mode 0600"

curl -fsS "$ISSUER/dev/health" | grep -q '"ok"' || fail "/dev/health"

# ---------------------------------------------------------------- discovery
curl -fsS "$ISSUER/.well-known/openid-configuration" -o "$WORK/disco.json"
[ "$($H json "$WORK/disco.json" .issuer)" = "$ISSUER" ] || fail "issuer mismatch"
AUTHZ="$($H json "$WORK/disco.json" .authorization_endpoint)"
TOKEN_EP="$($H json "$WORK/disco.json" .token_endpoint)"
USERINFO="$($H json "$WORK/disco.json" .userinfo_endpoint)"
JWKS_URI="$($H json "$WORK/disco.json" .jwks_uri)"
END_SESSION="$($H json "$WORK/disco.json" .end_session_endpoint)"
[ "$($H json "$WORK/disco.json" .backchannel_logout_supported)" = true ] || fail "backchannel_logout_supported"
[ "$($H json "$WORK/disco.json" .code_challenge_methods_supported)" = '["S256"]' ] || fail "S256 only"
step "discovery ok"

fetch_jwks() { curl -fsS "$JWKS_URI" -o "$WORK/jwks.json"; }
fetch_jwks

urlenc() { node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"; }

# hop JAR URL [curl args…]: one request, no redirect following.
# Sets STATUS, LOCATION (absolute), body in $WORK/body.html
hop() {
  local jar="$1" url="$2"; shift 2
  local out
  out="$(curl -sS -o "$WORK/body.html" -b "$jar" -c "$jar" -w '%{http_code} %{redirect_url}' "$@" "$url")"
  STATUS="${out%% *}"
  LOCATION="${out#* }"
}

# walk JAR URL: follow redirects inside the IdP until a page (login form) or
# a redirect to the client's redirect_uri. Sets STATUS/LOCATION/FINAL.
walk() {
  local jar="$1" url="$2" i
  for i in $(seq 1 10); do
    hop "$jar" "$url"
    case "$STATUS" in
      30[1237])
        case "$LOCATION" in
          "$ISSUER"/*) url="$LOCATION" ;;
          *) FINAL="$LOCATION"; return 0 ;;
        esac ;;
      *) FINAL=""; return 0 ;;
    esac
  done
  fail "redirect loop at $url"
}

# authorize JAR CLIENT [extra query] -> sets STATE NONCE VERIFIER; walks to page or callback
authorize() {
  local jar="$1" client="$2" extra="${3:-}"
  read -r VERIFIER CHALLENGE <<<"$($H pkce)"
  STATE="$($H random)"; NONCE="$($H random)"
  walk "$jar" "$AUTHZ?client_id=$client&response_type=code&scope=openid%20email%20profile%20groups&redirect_uri=$(urlenc "$REDIRECT")&state=$STATE&nonce=$NONCE&code_challenge=$CHALLENGE&code_challenge_method=S256$extra"
}

# login JAR USER PASSWORD [OTP]: submit the login form currently in body.html
login() {
  local jar="$1" user="$2" pw="$3" otp="${4:-}"
  grep -q 'name="login"' "$WORK/body.html" || fail "no login form (status $STATUS)"
  grep -q 'name="password"' "$WORK/body.html" || fail "no password field"
  local action; action="$($H form-action "$WORK/body.html")"
  hop "$jar" "$action" --data-urlencode "login=$user" --data-urlencode "password=$pw" --data-urlencode "otp=$otp"
  if [ "$STATUS" = 303 ] || [ "$STATUS" = 302 ]; then
    walk "$jar" "$LOCATION"
  fi
}

# code_from_final: check the callback redirect, extract code
code_from_final() {
  case "$FINAL" in "$REDIRECT"\?*) ;; *) fail "expected redirect to $REDIRECT, got '${FINAL}' (status $STATUS)";; esac
  [ "$($H query "$FINAL" state)" = "$STATE" ] || fail "state mismatch"
  [ "$($H query "$FINAL" iss)" = "$ISSUER" ] || fail "iss parameter mismatch"
  CODE="$($H query "$FINAL" code)"
}

# exchange CLIENT SECRET -> $WORK/token.json, ID_TOKEN, ACCESS_TOKEN
exchange() {
  curl -fsS -u "$1:$2" "$TOKEN_EP" -d grant_type=authorization_code --data-urlencode "code=$CODE" \
    --data-urlencode "redirect_uri=$REDIRECT" --data-urlencode "code_verifier=$VERIFIER" -o "$WORK/token.json" \
    || fail "token exchange"
  ID_TOKEN="$($H json "$WORK/token.json" .id_token)"
  ACCESS_TOKEN="$($H json "$WORK/token.json" .access_token)"
}

# ---------------------------------------------------------------- 1. code flow, alice (mfa user)
JAR_A="$WORK/alice.jar"
authorize "$JAR_A" ztproxy
[ "$STATUS" = 200 ] || fail "expected the login page, got $STATUS"
grep -Eq '<form [^>]*action="'"$ISSUER"'/interaction/[A-Za-z0-9_-]+"' "$WORK/body.html" || fail "form action shape"
login "$JAR_A" alice wrong-password
[ "$STATUS" = 401 ] || fail "bad password should give 401, got $STATUS"
grep -q 'name="login"' "$WORK/body.html" || fail "form not re-shown after bad password"
login "$JAR_A" alice alice-dev-pw 000000
[ "$STATUS" = 401 ] || fail "bad otp should give 401, got $STATUS"
login "$JAR_A" alice alice-dev-pw 123456
code_from_final
exchange ztproxy ztproxy-dev-secret
[ "$($H json "$WORK/token.json" .token_type)" = Bearer ] || fail "token_type"
CLAIMS="$($H verify-jwt "$ID_TOKEN" "$WORK/jwks.json" alg=RS256 iss="$ISSUER" aud=ztproxy sub=alice \
  nonce="$NONCE" acr=mfa amr~pwd amr~otp email=alice@corp.example groups~staff auth_time? sid?)" \
  || fail "id_token checks"
ALICE_SID="$(node -e 'console.log(JSON.parse(process.argv[1]).payload.sid)' "$CLAIMS")"
OLD_KID="$(node -e 'console.log(JSON.parse(process.argv[1]).header.kid)' "$CLAIMS")"
ALICE_ID_TOKEN="$ID_TOKEN"
step "code flow + PKCE ok (alice, acr=mfa, kid $OLD_KID)"

curl -fsS -H "Authorization: Bearer $ACCESS_TOKEN" "$USERINFO" -o "$WORK/userinfo.json" || fail "userinfo"
[ "$($H json "$WORK/userinfo.json" .sub)" = alice ] || fail "userinfo sub"
[ "$($H json "$WORK/userinfo.json" .email)" = alice@corp.example ] || fail "userinfo email"
step "userinfo ok"

# code is single use
curl -sS -o /dev/null -w '%{http_code}' -u ztproxy:ztproxy-dev-secret "$TOKEN_EP" -d grant_type=authorization_code \
  --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$REDIRECT" --data-urlencode "code_verifier=$VERIFIER" \
  | grep -q 400 || fail "code reuse accepted"
# PKCE required
walk "$JAR_A" "$AUTHZ?client_id=ztproxy&response_type=code&scope=openid&redirect_uri=$(urlenc "$REDIRECT")&state=x"
case "$FINAL" in *error=invalid_request*) ;; *) fail "authorization without PKCE not refused ($FINAL)";; esac
step "code reuse and missing PKCE refused"

# ---------------------------------------------------------------- 2. SSO and prompt=login / max_age
authorize "$JAR_A" ztproxy
code_from_final   # no login form: the IdP session is reused
step "SSO ok"
authorize "$JAR_A" ztproxy "&prompt=login"
[ "$STATUS" = 200 ] && grep -q 'name="password"' "$WORK/body.html" || fail "prompt=login did not show the form"
login "$JAR_A" alice alice-dev-pw
code_from_final
sleep 1.1
authorize "$JAR_A" ztproxy "&max_age=1"
[ "$STATUS" = 200 ] && grep -q 'name="password"' "$WORK/body.html" || fail "max_age did not force login"
login "$JAR_A" alice alice-dev-pw
code_from_final
exchange ztproxy ztproxy-dev-secret
$H verify-jwt "$ID_TOKEN" "$WORK/jwks.json" acr=mfa auth_time? >/dev/null || fail "id_token after max_age"
step "prompt=login and max_age force re-authentication"

# ---------------------------------------------------------------- 3. bob (no mfa) asked for mfa
JAR_B="$WORK/bob.jar"
authorize "$JAR_B" ztproxy
login "$JAR_B" bob bob-dev-pw
code_from_final
authorize "$JAR_B" ztproxy "&acr_values=mfa"
[ "$STATUS" = 200 ] && grep -q 'name="password"' "$WORK/body.html" || fail "acr_values=mfa did not re-prompt bob"
login "$JAR_B" bob bob-dev-pw 123456
code_from_final
exchange ztproxy ztproxy-dev-secret
$H verify-jwt "$ID_TOKEN" "$WORK/jwks.json" sub=bob acr=pwd amr~pwd groups~staff >/dev/null || fail "bob acr"
step "acr_values=mfa for a user without MFA: login succeeds with acr=pwd"

# ---------------------------------------------------------------- 4. ES256 client
authorize "$JAR_A" ztproxy-es
code_from_final
exchange ztproxy-es ztproxy-es-secret
$H verify-jwt "$ID_TOKEN" "$WORK/jwks.json" alg=ES256 aud=ztproxy-es nonce="$NONCE" >/dev/null || fail "ES256 id_token"
step "ES256 id_token ok"

# ---------------------------------------------------------------- 5. key rotation
curl -fsS -X POST "$ISSUER/dev/rotate-keys" -o "$WORK/rot.json" || fail "rotate"
NEW_KID="$($H json "$WORK/rot.json" .kid)"
[ "$NEW_KID" != "$OLD_KID" ] || fail "rotation kept the kid"
fetch_jwks
grep -q "\"$NEW_KID\"" "$WORK/jwks.json" || fail "new kid not in JWKS"
grep -q "\"$OLD_KID\"" "$WORK/jwks.json" || fail "old kid dropped without retire"
authorize "$JAR_A" ztproxy
code_from_final
exchange ztproxy ztproxy-dev-secret
$H verify-jwt "$ID_TOKEN" "$WORK/jwks.json" kid="$NEW_KID" sub=alice >/dev/null || fail "id_token not signed with the new key"
curl -fsS -X POST "$ISSUER/dev/rotate-keys?retire=1" -o "$WORK/rot2.json" || fail "rotate retire"
NEWER_KID="$($H json "$WORK/rot2.json" .kid)"
fetch_jwks
grep -q "\"$NEWER_KID\"" "$WORK/jwks.json" || fail "newest kid not in JWKS"
! grep -q "\"$OLD_KID\"" "$WORK/jwks.json" || fail "retired kid still in JWKS"
! grep -q "\"$NEW_KID\"" "$WORK/jwks.json" || fail "retired kid still in JWKS"
step "key rotation ok ($OLD_KID -> $NEW_KID -> $NEWER_KID, retired)"

# ---------------------------------------------------------------- 6. mint
curl -fsS -X POST "$ISSUER/dev/mint" -H 'content-type: application/json' \
  -d '{"claims":{"sub":"bob","cnf":{"x5t#S256":"q3Jrx0vAoCmcxl8H1nTRkZ5aQm9eHmJ0X5LZJnC6ZKQ"},"scope":"openid"}}' \
  -o "$WORK/mint.json" || fail "mint"
$H verify-jwt "$($H json "$WORK/mint.json" .token)" "$WORK/jwks.json" alg=RS256 kid="$NEWER_KID" iss="$ISSUER" \
  aud=ztproxy sub=bob 'cnf.x5t#S256=q3Jrx0vAoCmcxl8H1nTRkZ5aQm9eHmJ0X5LZJnC6ZKQ' iat? exp? >/dev/null || fail "minted token"
curl -fsS -X POST "$ISSUER/dev/mint" -d '{"alg":"ES256","claims":{"sub":"carol"}}' -o "$WORK/mint2.json" || fail "mint ES256"
$H verify-jwt "$($H json "$WORK/mint2.json" .token)" "$WORK/jwks.json" alg=ES256 sub=carol >/dev/null || fail "minted ES256"
curl -fsS -X POST "$ISSUER/dev/mint" -d "{\"kid\":\"$OLD_KID\"}" -o "$WORK/mint3.json" || fail "mint with retired kid"
! $H verify-jwt "$($H json "$WORK/mint3.json" .token)" "$WORK/jwks.json" >/dev/null 2>&1 || fail "retired kid verified"
step "mint ok"

# ---------------------------------------------------------------- 7. RP-initiated logout + back-channel over mTLS
# (the first ID token was signed with a now retired key: an id_token_hint must
# verify, so take a fresh one from the same IdP session)
authorize "$JAR_A" ztproxy
code_from_final
exchange ztproxy ztproxy-dev-secret
ALICE_ID_TOKEN="$ID_TOKEN"
hop "$JAR_A" "$END_SESSION?id_token_hint=$ALICE_ID_TOKEN&post_logout_redirect_uri=$(urlenc "$POST_LOGOUT")&state=bye"
[ "$STATUS" = 200 ] || fail "end_session page status $STATUS"
ACTION="$($H form-action "$WORK/body.html")"
XSRF="$($H form-field "$WORK/body.html" xsrf)"
hop "$JAR_A" "$ACTION" --data-urlencode "xsrf=$XSRF" -d logout=yes
[ "$STATUS" = 303 ] || fail "logout confirm status $STATUS"
[ "$LOCATION" = "$POST_LOGOUT?state=bye" ] || fail "post logout redirect: $LOCATION"
step "RP-initiated logout ok"
# the session is gone: prompt=none now fails
authorize "$JAR_A" ztproxy "&prompt=none"
case "$FINAL" in *error=login_required*) ;; *) fail "session survived logout ($FINAL)";; esac

if [ $HAVE_MTLS = 1 ]; then
  [ -s "$WORK/backchannel.log" ] || fail "no back-channel logout received"
  LT="$(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").map(JSON.parse).pop(); if(l.client_cert_cn!=="dev-idp") process.exit(1); console.log(new URLSearchParams(l.body).get("logout_token"))' "$WORK/backchannel.log")" \
    || fail "back-channel request shape"
  $H verify-jwt "$LT" "$WORK/jwks.json" iss="$ISSUER" aud=ztproxy sub=alice sid="$ALICE_SID" jti? iat? >/dev/null \
    || fail "logout token"
  node -e 'const p=JSON.parse(Buffer.from(process.argv[1].split(".")[1],"base64url"));if(!p.events||!("http://schemas.openid.net/event/backchannel-logout" in p.events)||p.nonce)process.exit(1)' "$LT" \
    || fail "logout token events/nonce"
  step "back-channel logout token delivered over mTLS (client cert CN=dev-idp) and verified"

  # /dev/logout: new session for alice, then end it from the side
  : > "$WORK/backchannel.log"
  JAR_A2="$WORK/alice2.jar"
  authorize "$JAR_A2" ztproxy
  login "$JAR_A2" alice alice-dev-pw
  code_from_final
  curl -fsS -X POST "$ISSUER/dev/logout?sub=alice" -o "$WORK/devlogout.json" || fail "/dev/logout"
  [ "$($H json "$WORK/devlogout.json" .sessions)" = 1 ] || fail "/dev/logout sessions: $(cat "$WORK/devlogout.json")"
  [ "$($H json "$WORK/devlogout.json" '.backchannel[0].ok')" = true ] || fail "/dev/logout delivery: $(cat "$WORK/devlogout.json")"
  [ -s "$WORK/backchannel.log" ] || fail "no back-channel logout from /dev/logout"
  authorize "$JAR_A2" ztproxy "&prompt=none"
  case "$FINAL" in *error=login_required*) ;; *) fail "session survived /dev/logout ($FINAL)";; esac
  step "/dev/logout ok"
fi

# ---------------------------------------------------------------- 8. restart keeps keys, SIGTERM exits 0
kill -TERM "$IDP_PID"
rc=0; wait "$IDP_PID" || rc=$?
IDP_PID=""
[ $rc = 0 ] || fail "dev-idp exited $rc on SIGTERM"
node "$HERE/server.js" --port "$PORT" --issuer "$ISSUER" --clients "$WORK/clients.json" \
  --users "$HERE/users.json" --state-dir "$WORK/state" > "$WORK/idp.out" 2> "$WORK/idp.err" &
IDP_PID=$!
for _ in $(seq 1 200); do
  grep -q "^dev-idp ready" "$WORK/idp.out" 2>/dev/null && break
  kill -0 "$IDP_PID" 2>/dev/null || fail "dev-idp exited during restart"
  sleep 0.1
done
curl -fsS "$JWKS_URI" | grep -q "\"$NEWER_KID\"" || fail "keys not persisted across restart"
kill -TERM "$IDP_PID"
rc=0; wait "$IDP_PID" || rc=$?
IDP_PID=""
[ $rc = 0 ] || fail "dev-idp exited $rc on SIGTERM"
step "restart keeps keys; SIGTERM exits 0"

echo "smoke: PASS"
