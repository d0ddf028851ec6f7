// In-memory storage adapter for oidc-provider (development only).
//
// Same contract as oidc-provider's bundled MemoryAdapter, but:
//  - unbounded (the bundled one is an LRU of 1000 entries, which a long test
//    run could overflow and silently drop sessions),
//  - module-level storage, so it survives the Provider being rebuilt after a
//    key rotation (sessions, grants and codes stay valid),
//  - exposes helpers that /dev/logout uses to find a user's sessions.

const storage = new Map(); // key -> { value, expiresAt (ms) | undefined }

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

const grantKey = (id) => `grant:${id}`;
const sessionUidKey = (uid) => `sessionUid:${uid}`;
const userCodeKey = (code) => `userCode:${code}`;

function get(key) {
  const entry = storage.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    storage.delete(key);
    return undefined;
  }
  return entry.value;
}

function set(key, value, expiresIn) {
  storage.set(key, {
    value,
    expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
  });
}

// Periodic sweep of expired entries.
const sweeper = setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of storage) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) storage.delete(key);
  }
}, 60_000);
sweeper.unref();

function revokeTokensOfGrant(grantId) {
  const key = grantKey(grantId);
  const ids = get(key);
  if (ids) {
    for (const id of ids) storage.delete(id);
    storage.delete(key);
  }
}

// Tokens issued under the grant and the grant itself.
export function revokeGrantEverywhere(grantId) {
  revokeTokensOfGrant(grantId);
  storage.delete(`Grant:${grantId}`);
}

// All live sessions (payloads) of one account.
export function sessionsOf(accountId) {
  const out = [];
  for (const key of storage.keys()) {
    if (!key.startsWith('Session:')) continue;
    const payload = get(key);
    if (payload && payload.accountId === accountId) out.push(payload);
  }
  return out;
}

export function destroySession(payload) {
  storage.delete(`Session:${payload.jti}`);
  if (payload.uid) storage.delete(sessionUidKey(payload.uid));
}

export default class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async destroy(id) {
    storage.delete(this.key(id));
  }

  async consume(id) {
    const value = get(this.key(id));
    if (value) value.consumed = Math.floor(Date.now() / 1000);
  }

  async find(id) {
    return get(this.key(id));
  }

  async findByUid(uid) {
    const id = get(sessionUidKey(uid));
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(userCode) {
    const id = get(userCodeKey(userCode));
    return id ? this.find(id) : undefined;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);

    if (this.model === 'Session') {
      set(sessionUidKey(payload.uid), id, expiresIn);
    }

    const { grantId, userCode } = payload;
    if (GRANTABLE.has(this.model) && grantId) {
      const gk = grantKey(grantId);
      const prev = storage.get(gk);
      const list = get(gk) || [];
      list.push(key);
      set(gk, list, expiresIn);
      // keep the longest expiry of any token in the list
      const entry = storage.get(gk);
      if (prev && (prev.expiresAt === undefined
        || (entry.expiresAt !== undefined && prev.expiresAt > entry.expiresAt))) {
        entry.expiresAt = prev.expiresAt;
      }
    }

    if (userCode) {
      set(userCodeKey(userCode), id, expiresIn);
    }

    set(key, payload, expiresIn);
  }

  async revokeByGrantId(grantId) {
    revokeTokensOfGrant(grantId);
  }
}
