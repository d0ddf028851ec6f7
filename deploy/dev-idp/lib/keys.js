// Signing keys of the dev IdP: generated with node:crypto, persisted in the
// state directory (keys.json, mode 0600), rotated by POST /dev/rotate-keys.
//
// Each key: { kid, alg, status, created, jwk (private, JWK form) }
//   status "active"    - the key that signs new tokens for its alg (one per alg)
//   status "published" - still in the JWKS (verifies older tokens), not used to sign
//   status "retired"   - removed from the JWKS; kept on disk so /dev/mint can
//                        still sign with it (tests for "kid no longer published")

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const SUPPORTED_ALGS = ['RS256', 'PS256', 'ES256'];

const b64u = (buf) => Buffer.from(buf).toString('base64url');

export function generateKey(alg) {
  let pair;
  switch (alg) {
    case 'RS256':
    case 'PS256':
      pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      break;
    case 'ES256':
      pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      break;
    default:
      throw new Error(`unsupported alg ${alg} (supported: ${SUPPORTED_ALGS.join(', ')})`);
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  const kid = `${alg.toLowerCase()}-${new Date().toISOString().slice(0, 10).replace(/-/g, '')}-${b64u(crypto.randomBytes(6))}`;
  return {
    kid, alg, status: 'active', created: new Date().toISOString(), jwk,
  };
}

export class KeyStore {
  constructor(stateDir) {
    this.file = path.join(stateDir, 'keys.json');
    this.keys = [];
    this.cookieKeys = [];
  }

  load() {
    if (fs.existsSync(this.file)) {
      const data = JSON.parse(fs.readFileSync(this.file, 'utf8'));
      this.keys = data.signing || [];
      this.cookieKeys = data.cookie_keys || [];
    }
    let changed = false;
    for (const alg of SUPPORTED_ALGS) {
      if (!this.active(alg)) {
        this.keys.push(generateKey(alg));
        changed = true;
      }
    }
    if (!this.cookieKeys.length) {
      this.cookieKeys = [b64u(crypto.randomBytes(32))];
      changed = true;
    }
    if (changed) this.save();
  }

  save() {
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ signing: this.keys, cookie_keys: this.cookieKeys }, null, 2)}\n`, { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }

  active(alg) {
    return this.keys.find((k) => k.alg === alg && k.status === 'active');
  }

  byKid(kid) {
    return this.keys.find((k) => k.kid === kid);
  }

  // Private JWKS for oidc-provider: active keys first (oidc-provider signs
  // with the first matching key), then the published ones.
  providerJwks() {
    const rank = { active: 0, published: 1 };
    const keys = this.keys
      .filter((k) => k.status in rank)
      .sort((a, b) => rank[a.status] - rank[b.status])
      .map((k) => ({
        ...k.jwk, kid: k.kid, alg: k.alg, use: 'sig',
      }));
    return { keys };
  }

  // Adds a new key for alg and makes it the active one. The previous keys of
  // that alg stay published, or are retired (dropped from the JWKS) if retire.
  rotate(alg, retire) {
    const fresh = generateKey(alg);
    const retired = [];
    for (const k of this.keys) {
      if (k.alg !== alg) continue;
      if (retire && k.status !== 'retired') {
        k.status = 'retired';
        retired.push(k.kid);
      } else if (k.status === 'active') {
        k.status = 'published';
      }
    }
    this.keys.unshift(fresh);
    this.save();
    return { key: fresh, retired };
  }

  summary() {
    return this.keys.map(({
      kid, alg, status, created,
    }) => ({
      kid, alg, status, created,
    }));
  }
}

// Compact JWS with node:crypto (RS256, PS256, ES256, or "none").
export function signJwt(header, payload, jwk) {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  if (header.alg === 'none') return `${input}.`;
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  let sig;
  switch (header.alg) {
    case 'RS256':
      sig = crypto.sign('sha256', Buffer.from(input), key);
      break;
    case 'PS256':
      sig = crypto.sign('sha256', Buffer.from(input), {
        key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32,
      });
      break;
    case 'ES256':
      sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
      break;
    default:
      throw new Error(`unsupported alg ${header.alg}`);
  }
  return `${input}.${b64u(sig)}`;
}
