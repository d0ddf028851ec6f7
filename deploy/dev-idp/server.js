#!/usr/bin/env node
// ztproxy development OpenID Connect provider.
//
// DEVELOPMENT AND TESTS ONLY. Plain HTTP on loopback, fixed dev passwords, a
// fixed one-time code, unauthenticated /dev/* admin endpoints that mint tokens
// with the provider's keys. Never expose it, never use it in production.
//
// Built on oidc-provider (OpenID Certified); see README.md.

import * as crypto from 'node:crypto';
import * as dns from 'node:dns';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import Provider, { interactionPolicy } from 'oidc-provider';

import MemoryAdapter, { sessionsOf, destroySession, revokeGrantEverywhere } from './lib/memory_adapter.js';
import { KeyStore, SUPPORTED_ALGS, generateKey, signJwt } from './lib/keys.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEV_OTP = '123456';
const LISTEN_HOST = '127.0.0.1';

// ---------------------------------------------------------------- arguments

function usage(msg) {
  if (msg) process.stderr.write(`dev-idp: ${msg}\n`);
  process.stderr.write(`usage: node server.js --port P [--issuer http://127.0.0.1:P]
                      [--clients FILE] [--users FILE] [--state-dir DIR]
`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      issuer: { type: 'string' },
      clients: { type: 'string', default: path.join(HERE, 'clients.json') },
      users: { type: 'string', default: path.join(HERE, 'users.json') },
      'state-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (err) {
  usage(err.message);
}
if (args.help) usage();
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535 || args.port === undefined) usage('--port is required');
let issuer = args.issuer || `http://${LISTEN_HOST}:${port}`;
issuer = issuer.replace(/\/+$/, '');
try {
  const u = new URL(issuer);
  if (!/^https?:$/.test(u.protocol) || u.search || u.hash) throw new Error();
} catch {
  usage(`invalid --issuer ${issuer}`);
}

const log = (...parts) => process.stderr.write(`dev-idp: ${parts.join(' ')}\n`);

// ---------------------------------------------------------------- state dir

let stateDir = args['state-dir'];
let stateDirIsTemp = false;
if (stateDir) {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
} else {
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ztproxy-dev-idp-'));
  stateDirIsTemp = true;
  process.on('exit', () => fs.rmSync(stateDir, { recursive: true, force: true }));
}
const keystore = new KeyStore(stateDir);
keystore.load();

// ---------------------------------------------------------------- users

function readJson(file, what) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    log(`cannot read ${what} file ${file}: ${err.message}`);
    process.exit(1);
  }
  return undefined;
}

const usersRaw = readJson(args.users, 'users');
const userList = Array.isArray(usersRaw) ? usersRaw : usersRaw.users;
if (!Array.isArray(userList)) {
  log(`${args.users}: expected an array of users or {"users": [...]}`);
  process.exit(1);
}
const users = new Map();
for (const u of userList) {
  if (!u || typeof u.username !== 'string' || typeof u.password !== 'string') {
    log(`${args.users}: every user needs "username" and "password" strings`);
    process.exit(1);
  }
  users.set(u.username, {
    username: u.username,
    password: u.password,
    email: u.email || `${u.username}@corp.example`,
    name: u.name || u.username,
    mfa: u.mfa === true,
    groups: Array.isArray(u.groups) ? u.groups : [],
  });
}

// ---------------------------------------------------------------- clients

const clientsFile = path.resolve(args.clients);
const clientsRaw = readJson(clientsFile, 'clients');
const clientList = Array.isArray(clientsRaw) ? clientsRaw : clientsRaw.clients;
if (!Array.isArray(clientList)) {
  log(`${clientsFile}: expected an array of clients or {"clients": [...]}`);
  process.exit(1);
}

// Per back-channel-logout URI: the https agent (client certificate for the
// proxy's mutual TLS) and an optional address to connect to.
const backchannelTargets = new Map(); // uri href -> { agent, resolve }
const clients = [];
for (const c of clientList) {
  const {
    backchannel_tls: tls, backchannel_resolve: resolveTo, ...metadata
  } = c;
  if (!metadata.client_id) {
    log(`${clientsFile}: a client has no client_id`);
    process.exit(1);
  }
  clients.push(metadata);
  if (metadata.backchannel_logout_uri) {
    const target = { resolve: resolveTo };
    if (tls) {
      const rel = (p) => (p ? path.resolve(path.dirname(clientsFile), p) : undefined);
      const read = (p, what) => {
        try {
          return fs.readFileSync(rel(p));
        } catch (err) {
          log(`client ${metadata.client_id}: cannot read backchannel_tls.${what} ${p}: ${err.message}`);
          process.exit(1);
        }
        return undefined;
      };
      target.agent = new https.Agent({
        cert: tls.cert ? read(tls.cert, 'cert') : undefined,
        key: tls.key ? read(tls.key, 'key') : undefined,
        ca: tls.ca ? read(tls.ca, 'ca') : undefined,
        passphrase: tls.passphrase,
        servername: tls.servername,
        rejectUnauthorized: tls.reject_unauthorized !== false,
        keepAlive: false,
      });
    }
    backchannelTargets.set(new URL(metadata.backchannel_logout_uri).href, target);
  }
}

// DNS for outgoing requests (back-channel logout): per-client
// "backchannel_resolve", else *.test / *.localhost / localhost -> 127.0.0.1
// (RFC 6761 reserved names; tests use https://app.test:PORT), else system DNS.
function lookupFor(forced) {
  return function lookup(hostname, options, callback) {
    if (typeof options === 'function') {
      callback = options; // eslint-disable-line no-param-reassign
      options = {}; // eslint-disable-line no-param-reassign
    }
    let address = forced;
    const h = hostname.toLowerCase();
    if (!address && (h === 'localhost' || h.endsWith('.localhost') || h.endsWith('.test'))) {
      address = '127.0.0.1';
    }
    if (!address) return dns.lookup(hostname, options, callback);
    const family = net.isIPv6(address) ? 6 : 4;
    if (options && options.all) return process.nextTick(callback, null, [{ address, family }]);
    return process.nextTick(callback, null, address, family);
  };
}

function httpOptions(url) {
  const target = backchannelTargets.get(url.href);
  const opts = {
    signal: AbortSignal.timeout(5000),
    dnsLookup: lookupFor(target?.resolve),
  };
  if (target?.agent && url.protocol === 'https:') opts.agent = target.agent;
  return opts;
}

// ---------------------------------------------------------------- recent events (GET /dev/events)

const events = [];
function record(type, data) {
  const ev = { time: new Date().toISOString(), type, ...data };
  events.push(ev);
  if (events.length > 200) events.shift();
  log(type, JSON.stringify(data));
}

// ---------------------------------------------------------------- provider configuration

const { Prompt, Check, base: basePolicy } = interactionPolicy;

function buildPolicy() {
  const policy = basePolicy();
  const login = policy.get('login');
  // acr_values=mfa (voluntary in OIDC core) is treated as a demand here: a
  // session whose acr is not "mfa" is sent back to the login form once. A user
  // without MFA still logs in, with acr "pwd": the RP decides (step-up error).
  login.checks.add(new Check(
    'acr_values_mfa',
    'multi-factor authentication was requested',
    (ctx) => {
      const { oidc } = ctx;
      const requested = String(oidc.params.acr_values || '').split(' ');
      if (!requested.includes('mfa')) return Check.NO_NEED_TO_PROMPT;
      if (oidc.result?.login) return Check.NO_NEED_TO_PROMPT; // just logged in: accept the outcome
      if (oidc.session.acr === 'mfa') return Check.NO_NEED_TO_PROMPT;
      return Check.REQUEST_PROMPT;
    },
  ));
  return policy;
}

// Auto-consent: every configured client gets what it asks for, no consent screen.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant;
  if (grantId) grant = await oidc.provider.Grant.find(grantId);
  if (grant && grant.accountId !== oidc.session.accountId) grant = undefined;
  if (!grant) {
    grant = new oidc.provider.Grant({
      clientId: oidc.client.clientId,
      accountId: oidc.session.accountId,
    });
  }
  const scopes = [...(oidc.requestParamOIDCScopes || [])];
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const claims = [
    ...Object.keys(oidc.claims?.id_token || {}),
    ...Object.keys(oidc.claims?.userinfo || {}),
  ];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

async function findAccount(ctx, id) {
  const user = users.get(id);
  if (!user) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        email: user.email,
        email_verified: true,
        name: user.name,
        preferred_username: user.username,
        groups: user.groups,
      };
    },
  };
}

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:26em;margin:3em auto;padding:0 1em}
input{display:block;width:100%;margin:.2em 0 1em;padding:.4em}
.error{color:#b00}.banner{background:#fe9;padding:.3em .6em;font-size:.9em}</style>
</head>
<body>
<p class="banner">ztproxy <b>development</b> identity provider &mdash; not for production</p>
${body}
</body>
</html>
`;
}

async function logoutSource(ctx) {
  // Auto-submitting confirmation form. Scripts: POST xsrf + logout=yes to the action.
  const secret = ctx.oidc.session.state?.secret;
  ctx.type = 'html';
  ctx.body = page('Sign out', `<h1>Signing out&hellip;</h1>
<form id="logout" method="post" action="${esc(ctx.oidc.urlFor('end_session_confirm'))}">
<input type="hidden" name="xsrf" value="${esc(secret)}">
<input type="hidden" name="logout" value="yes">
<button type="submit">Sign out</button>
</form>
<script>document.getElementById('logout').submit();</script>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<h1 id="signed-out">Signed out</h1><p>You are signed out of the dev IdP.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<h1>Error</h1>
<p>error: <code id="error">${esc(out.error)}</code></p>
<p>error_description: <span id="error_description">${esc(out.error_description)}</span></p>`);
}

function providerConfig() {
  return {
    adapter: MemoryAdapter,
    clients,
    jwks: keystore.providerJwks(),
    findAccount,
    loadExistingGrant,
    httpOptions,
    renderError,
    interactions: {
      policy: buildPolicy(),
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    cookies: {
      keys: keystore.cookieKeys,
      // Plain http on loopback: no Secure flag possible, so no SameSite=None.
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: {
      // acr and amr ride on the openid scope so every ID token carries them.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Put scope-requested claims (email, name, groups) into the ID token too.
    conformIdTokenClaims: false,
    acrValues: ['pwd', 'mfa'],
    responseTypes: ['code'],
    pkce: {
      methods: ['S256'],
      required: () => true,
    },
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
      require_auth_time: true,
    },
    features: {
      devInteractions: { enabled: false },
      claimsParameter: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 120,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
      RefreshToken: 86400,
    },
  };
}

let provider;
let providerCallback;

function buildProvider() {
  const p = new Provider(issuer, providerConfig());
  p.on('server_error', (ctx, err) => record('server_error', { message: err.message, stack: err.stack }));
  p.on('backchannel.success', (ctx, client, accountId, sid) => record('backchannel.success', {
    client_id: client.clientId, uri: client.backchannelLogoutUri, sub: accountId, sid,
  }));
  p.on('backchannel.error', (ctx, err, client, accountId, sid) => record('backchannel.error', {
    client_id: client.clientId, uri: client.backchannelLogoutUri, sub: accountId, sid, error: err.message,
  }));
  p.on('end_session.success', (ctx) => record('end_session.success', { client_id: ctx.oidc.client?.clientId }));
  p.on('authorization.error', (ctx, err) => record('authorization.error', { error: err.message, description: err.error_description }));
  p.on('grant.error', (ctx, err) => record('grant.error', { error: err.message, description: err.error_description }));
  return p;
}

async function installProvider() {
  const p = buildProvider();
  // Fail fast on bad client metadata (oidc-provider validates lazily).
  for (const c of clients) {
    await p.Client.find(String(c.client_id));
  }
  provider = p;
  providerCallback = p.callback();
}

// ---------------------------------------------------------------- HTTP helpers

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

const sendJson = (res, status, obj) => send(res, status, 'application/json', `${JSON.stringify(obj, null, 2)}\n`);
const sendHtml = (res, status, html) => send(res, status, 'text/html; charset=utf-8', html);

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- login interaction

function loginForm(details, { error, login } = {}) {
  const { uid, params } = details;
  const action = `${issuer}/interaction/${uid}`;
  const mfaWanted = String(params.acr_values || '').split(' ').includes('mfa');
  return page('Sign in', `<h1>Sign in</h1>
<p>to <b id="client">${esc(params.client_id)}</b>${mfaWanted ? ' (multi-factor authentication requested)' : ''}</p>
${error ? `<p class="error" id="error">${esc(error)}</p>\n` : ''}<form method="post" action="${esc(action)}">
<label>Username <input type="text" name="login" value="${esc(login ?? params.login_hint ?? '')}" autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<label>One-time code (MFA users; dev code ${DEV_OTP}) <input type="text" name="otp" inputmode="numeric" autocomplete="one-time-code"></label>
<button type="submit">Sign in</button>
</form>
<p><a id="abort" href="${esc(`${action}/abort`)}">Cancel</a></p>`);
}

async function handleInteraction(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/abort)?\/?$/);
  if (!m) return sendHtml(res, 404, page('Not found', '<h1>Not found</h1>'));
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return sendHtml(res, 400, page('Error', `<h1>Error</h1><p id="error">${esc(err.error || err.message)}</p>
<p id="error_description">${esc(err.error_description || 'the login session expired or the cookies are missing; start again from the application')}</p>`));
  }
  if (details.uid !== m[1]) {
    return sendHtml(res, 400, page('Error', '<h1>Error</h1><p id="error">interaction mismatch</p>'));
  }

  if (m[2]) { // abort: the user cancelled
    record('login.abort', { client_id: details.params.client_id });
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  // Consent is auto-granted in loadExistingGrant; should the policy still
  // ask for it, grant right away.
  if (details.prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const d = details.prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (req.method === 'GET') {
    return sendHtml(res, 200, loginForm(details));
  }
  if (req.method !== 'POST') {
    return send(res, 405, 'text/plain', 'method not allowed\n', { allow: 'GET, POST' });
  }

  const form = new URLSearchParams(await readBody(req));
  const login = (form.get('login') || '').trim();
  const password = form.get('password') || '';
  const otp = (form.get('otp') || '').trim();
  const user = users.get(login);
  const eq = (a, b) => {
    const ha = crypto.createHash('sha256').update(a).digest();
    const hb = crypto.createHash('sha256').update(b).digest();
    return crypto.timingSafeEqual(ha, hb);
  };
  if (!user || !eq(password, user.password)) {
    record('login.failure', { login, reason: 'bad credentials' });
    return sendHtml(res, 401, loginForm(details, { error: 'Invalid username or password.', login }));
  }
  let acr = 'pwd';
  let amr = ['pwd'];
  if (user.mfa) {
    // MFA users: the dev OTP is optional (filled in automatically when left
    // empty); a wrong code fails the login.
    if (otp && !eq(otp, DEV_OTP)) {
      record('login.failure', { login, reason: 'bad otp' });
      return sendHtml(res, 401, loginForm(details, { error: 'Invalid one-time code.', login }));
    }
    acr = 'mfa';
    amr = ['pwd', 'otp'];
  }
  record('login.success', { sub: login, acr, client_id: details.params.client_id });
  return provider.interactionFinished(req, res, {
    login: {
      accountId: login, acr, amr, remember: true,
    },
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------- /dev endpoints

async function devLogout(sub) {
  const result = { sub, sessions: 0, backchannel: [] };
  for (const session of sessionsOf(sub)) {
    result.sessions += 1;
    const authorizations = session.authorizations || {};
    for (const [clientId, auth] of Object.entries(authorizations)) {
      const client = await provider.Client.find(clientId);
      if (client?.backchannelLogoutUri) {
        const entry = { client_id: clientId, uri: client.backchannelLogoutUri, sid: auth.sid };
        try {
          await client.backchannelLogout(sub, auth.sid);
          entry.ok = true;
          record('backchannel.success', {
            client_id: clientId, uri: client.backchannelLogoutUri, sub, sid: auth.sid, via: '/dev/logout',
          });
        } catch (err) {
          entry.ok = false;
          entry.error = err.message;
          record('backchannel.error', {
            client_id: clientId, uri: client.backchannelLogoutUri, sub, sid: auth.sid, error: err.message, via: '/dev/logout',
          });
        }
        result.backchannel.push(entry);
      }
      if (auth.grantId && !auth.persistsLogout) revokeGrantEverywhere(auth.grantId);
    }
    destroySession(session);
  }
  return result;
}

function mint(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw Object.assign(new Error('body must be a JSON object'), { status: 400 });
  }
  const {
    alg: algIn, kid: kidIn, header: extraHeader, ttl, ephemeral, claims: claimsIn, ...flat
  } = body;
  const claims = claimsIn && typeof claimsIn === 'object' ? claimsIn : flat;
  let alg = algIn;
  let key;
  if (kidIn !== undefined) {
    key = keystore.byKid(kidIn);
    if (!key) throw Object.assign(new Error(`unknown kid ${kidIn}`), { status: 400 });
    if (alg && alg !== key.alg) throw Object.assign(new Error(`kid ${kidIn} is a ${key.alg} key`), { status: 400 });
    alg = key.alg;
  } else if (alg === 'none') {
    key = undefined;
  } else {
    alg = alg || 'RS256';
    if (!SUPPORTED_ALGS.includes(alg)) {
      throw Object.assign(new Error(`unsupported alg ${alg} (supported: ${SUPPORTED_ALGS.join(', ')}, none)`), { status: 400 });
    }
    key = ephemeral ? generateKey(alg) : keystore.active(alg);
  }
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: issuer,
    aud: 'ztproxy',
    sub: 'alice',
    iat: now,
    exp: now + (Number.isFinite(ttl) ? ttl : 300),
    jti: crypto.randomBytes(12).toString('base64url'),
    ...claims,
  };
  // a claim given as null is removed (e.g. {"exp": null})
  for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];
  const header = {
    alg, typ: 'JWT', ...(key ? { kid: key.kid } : {}), ...(extraHeader || {}),
  };
  const token = signJwt(header, payload, key?.jwk);
  return {
    token, header, claims: payload, kid: key?.kid, ephemeral: !!ephemeral,
  };
}

async function handleDev(req, res, url) {
  const route = `${req.method} ${url.pathname.replace(/\/+$/, '')}`;
  switch (route) {
    case 'GET /dev/health':
      return sendJson(res, 200, { status: 'ok', issuer, pid: process.pid });

    case 'GET /dev/keys':
      return sendJson(res, 200, { keys: keystore.summary() });

    case 'GET /dev/events':
      return sendJson(res, 200, { events });

    case 'POST /dev/rotate-keys': {
      let alg = url.searchParams.get('alg') || 'RS256';
      let retire = /^(1|true|yes)$/i.test(url.searchParams.get('retire') || '');
      const raw = await readBody(req);
      if (raw.trim()) {
        try {
          const b = JSON.parse(raw);
          if (b.alg) alg = b.alg;
          if (b.retire !== undefined) retire = !!b.retire;
        } catch {
          return sendJson(res, 400, { error: 'invalid JSON body' });
        }
      }
      if (!SUPPORTED_ALGS.includes(alg)) {
        return sendJson(res, 400, { error: `unsupported alg ${alg}`, supported: SUPPORTED_ALGS });
      }
      const { key, retired } = keystore.rotate(alg, retire);
      await installProvider();
      record('keys.rotated', { alg, kid: key.kid, retired });
      const active = Object.fromEntries(SUPPORTED_ALGS.map((a) => [a, keystore.active(a).kid]));
      return sendJson(res, 200, {
        kid: key.kid, alg, active, retired, keys: keystore.summary(),
      });
    }

    case 'POST /dev/logout': {
      let sub = url.searchParams.get('sub');
      if (!sub) {
        const raw = await readBody(req);
        try {
          sub = raw.trim() ? JSON.parse(raw).sub : undefined;
        } catch {
          sub = new URLSearchParams(raw).get('sub');
        }
      }
      if (!sub) return sendJson(res, 400, { error: 'sub is required (?sub=alice)' });
      return sendJson(res, 200, await devLogout(sub));
    }

    case 'POST /dev/mint': {
      const raw = await readBody(req);
      let body;
      try {
        body = raw.trim() ? JSON.parse(raw) : {};
      } catch {
        return sendJson(res, 400, { error: 'invalid JSON body' });
      }
      try {
        return sendJson(res, 200, mint(body));
      } catch (err) {
        return sendJson(res, err.status || 500, { error: err.message });
      }
    }

    default:
      return sendJson(res, 404, {
        error: 'unknown dev endpoint',
        endpoints: ['GET /dev/health', 'GET /dev/keys', 'GET /dev/events', 'POST /dev/rotate-keys?alg=RS256[&retire=1]',
          'POST /dev/logout?sub=USER', 'POST /dev/mint'],
      });
  }
}

// ---------------------------------------------------------------- server

function isLoopback(addr) {
  return addr === '127.0.0.1' || addr === '::1' || addr === '::ffff:127.0.0.1' || (addr || '').startsWith('127.');
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === '/dev' || url.pathname.startsWith('/dev/')) {
      if (!isLoopback(req.socket.remoteAddress)) return sendJson(res, 403, { error: 'dev endpoints are loopback-only' });
      return await handleDev(req, res, url);
    }
    if (url.pathname.startsWith('/interaction/')) {
      return await handleInteraction(req, res, url);
    }
    if (url.pathname === '/') {
      return sendHtml(res, 200, page('ztproxy dev IdP', `<h1>ztproxy dev IdP</h1>
<p>Issuer <code>${esc(issuer)}</code> &mdash; <a href="/.well-known/openid-configuration">discovery</a>, <a href="/jwks">JWKS</a>.</p>`));
    }
    return providerCallback(req, res);
  } catch (err) {
    record('server_error', { message: err.message, stack: err.stack });
    if (!res.headersSent) return sendJson(res, 500, { error: 'server_error', message: err.message });
    res.destroy();
  }
  return undefined;
});

let shuttingDown = false;
function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

try {
  await installProvider();
} catch (err) {
  log(`configuration error: ${err.message}${err.error_description ? `: ${err.error_description}` : ''}`);
  process.exit(1);
}

server.on('error', (err) => {
  log(`listen on ${LISTEN_HOST}:${port} failed: ${err.message}`);
  process.exit(1);
});
server.listen(port, LISTEN_HOST, () => {
  log(`issuer ${issuer}, listening on ${LISTEN_HOST}:${server.address().port}, state dir ${stateDir}${stateDirIsTemp ? ' (temporary)' : ''}, ${clients.length} client(s), ${users.size} user(s)`);
  process.stdout.write(`dev-idp ready ${issuer}\n`);
});
