'use strict';
/*
 * Browser tests of the security console (issue 6): headless Debian chromium
 * (/usr/bin/chromium) driven by playwright-core, against a real ztproxy with
 * an admin listener, real device certificates (certs/*.sh), an inventory
 * file, a directory file, a rules file and a real upstream
 * (tests/integration/upstream.py). Everything listens on 127.0.0.1, on ports
 * the kernel picks; every child is tracked by PID and killed at the end.
 *
 * Environment (as for the integration tests):
 *   ZTPROXY_BIN    the proxy binary (default $ZT_BUILD_DIR/ztproxy)
 *   ZT_SOURCE_DIR  the repository root (default: two levels above this file)
 *   ZT_BUILD_DIR   the build directory (default $ZT_SOURCE_DIR/build);
 *                  screenshots go to $ZT_BUILD_DIR/browser-artifacts/
 *   ZT_KEEP_TMP=1  keep the temp dir (configs, logs, certs)
 *   CHROMIUM       the browser (default /usr/bin/chromium)
 *
 * Run: node --test tests/browser/console.test.js (or ctest -R browser_console)
 */

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const childProcess = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

let chromium;
try {
    ({ chromium } = require('playwright-core'));
} catch (e) {
    throw new Error('playwright-core is not installed in tests/browser: run tools/setup.sh ' +
                    '(or npm ci in tests/browser)');
}

const SOURCE_DIR = process.env.ZT_SOURCE_DIR || path.resolve(__dirname, '..', '..');
const BUILD_DIR = process.env.ZT_BUILD_DIR || path.join(SOURCE_DIR, 'build');
const ZTPROXY_BIN = process.env.ZTPROXY_BIN || path.join(BUILD_DIR, 'ztproxy');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(BUILD_DIR, 'browser-artifacts');
const CONSOLE_DIR = path.join(SOURCE_DIR, 'proxy', 'console');
const UPSTREAM_PY = path.join(SOURCE_DIR, 'tests', 'integration', 'upstream.py');
const IDP_JS = path.join(SOURCE_DIR, 'deploy', 'dev-idp', 'server.js');
const KEEP_TMP = process.env.ZT_KEEP_TMP === '1';

// Long waits: the build machine is shared and slow; nothing here asserts on time.
const WAIT_MS = 30000;

// ------------------------------------------------------------ processes
const children = new Set();

function spawn(argv, opts) {
    const p = childProcess.spawn(argv[0], argv.slice(1), Object.assign({ stdio: ['ignore', 'pipe', 'pipe'] }, opts));
    children.add(p);
    p.on('exit', () => children.delete(p));
    return p;
}

function killChild(p) {
    return new Promise((resolve) => {
        if (!p || p.exitCode !== null || p.signalCode !== null) return resolve();
        const t = setTimeout(() => { try { process.kill(p.pid, 'SIGKILL'); } catch (e) { /* gone */ } }, 10000);
        p.once('exit', () => { clearTimeout(t); resolve(); });
        try { process.kill(p.pid, 'SIGTERM'); } catch (e) { clearTimeout(t); resolve(); }
    });
}

process.on('exit', () => {
    for (const p of children) {
        try { process.kill(p.pid, 'SIGKILL'); } catch (e) { /* gone */ }
    }
});

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const port = s.address().port;
            s.close(() => resolve(port));
        });
    });
}

function portAccepts(port) {
    return new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.once('connect', () => { s.destroy(); resolve(true); });
        s.once('error', () => resolve(false));
    });
}

async function waitUntil(pred, what, timeout = WAIT_MS) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
        try {
            last = await pred();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) throw new Error('timed out waiting for ' + what + (last instanceof Error ? ': ' + last.message : ''));
        await new Promise((r) => setTimeout(r, 100));
    }
}

function run(argv, cwd) {
    const r = childProcess.spawnSync(argv[0], argv.slice(1), { cwd, encoding: 'utf8', timeout: 120000 });
    if (r.status !== 0) throw new Error(argv.join(' ') + ' failed (' + r.status + '):\n' + r.stdout + r.stderr);
    return r.stdout;
}

function writeJson(file, obj) {
    const tmp = file + '.tmp';
    fs.writeFileSync(tmp, JSON.stringify(obj, null, 1) + '\n');
    fs.renameSync(tmp, file);
}

// ------------------------------------------------------------- the stack
const DEVICES = ['laptop-a', 'laptop-b', 'secops-1'];
const TOKEN = crypto.randomBytes(24).toString('hex');

function rulesV1() {
    return {
        version: 'browser-1',
        rules: [
            { id: 'block-embargoed', effect: 'deny', when: { country: { in: ['KP', 'IR'] } },
              deny_message: 'Access from your location is not permitted.' },
            { id: 'app-devices', route: 'app', effect: 'allow', description: 'Company devices reach the app',
              when: { device_tier: { at_least: 'identified' } } },
            { id: 'wiki-staff', route: 'wiki', effect: 'allow', description: 'Staff on company devices',
              when: { all: [{ group: 'staff' }, { device_tier: { at_least: 'identified' } }] } }
        ]
    };
}

function inventory() {
    const rec = (id, owner) => ({ id, serial: 'SN-' + id, owner, managed: true, status: 'active', platform: 'linux',
                                  os_version: '12', model: 'Test Laptop', enrolled: '2024-01-02T03:04:05Z' });
    return [rec('laptop-a', 'alice@corp.example'), rec('laptop-b', 'bob@corp.example'),
            rec('secops-1', 'carol@corp.example')];
}

function directory() {
    return {
        version: 'dir-1',
        groups: { staff: {}, secops: { member_of: ['staff'] } },
        users: {
            'alice@corp.example': { groups: ['staff'], subject: 'alice' },
            'bob@corp.example': { groups: ['staff'], subject: 'bob' },
            // The admin client certificate's identity is its CN, "secops-1".
            'secops-1@corp.example': { groups: ['secops'], subject: 'secops-1' }
        }
    };
}

const S = {}; // the stack: ports, paths, processes

async function startUpstream() {
    for (let attempt = 0; attempt < 5; attempt++) {
        const port = await freePort();
        const p = spawn(['python3', '-u', UPSTREAM_PY, '--port', String(port), '--record',
                         path.join(S.tmp, 'upstream.jsonl'), '--name', 'main']);
        const errLog = fs.createWriteStream(path.join(S.tmp, 'upstream.stderr'));
        p.stderr.pipe(errLog);
        const ok = await new Promise((resolve) => {
            let buf = '';
            const t = setTimeout(() => resolve(false), WAIT_MS);
            p.stdout.on('data', (d) => {
                buf += d;
                if (buf.includes('ready')) { clearTimeout(t); resolve(true); }
            });
            p.on('exit', () => { clearTimeout(t); resolve(false); });
        });
        if (ok) {
            S.upstream = p;
            S.upstreamPort = port;
            return;
        }
        await killChild(p);
    }
    throw new Error('upstream.py did not start');
}

/* The development OpenID provider (deploy/dev-idp): bearer tokens for the
 * people on the wiki route. */
async function startIdp() {
    const secret = crypto.randomBytes(16).toString('hex');
    fs.writeFileSync(path.join(S.tmp, 'idp-secret'), secret + '\n', { mode: 0o600 });
    for (let attempt = 0; attempt < 4; attempt++) {
        const port = await freePort();
        const issuer = 'http://127.0.0.1:' + port;
        writeJson(path.join(S.tmp, 'idp-clients.json'), { clients: [{
            client_id: 'ztproxy', client_secret: secret, client_name: 'ztproxy (browser tests)',
            redirect_uris: ['https://wiki.test/.zt/callback'], token_endpoint_auth_method: 'client_secret_basic',
            id_token_signed_response_alg: 'RS256' }] });
        const p = spawn(['node', IDP_JS, '--port', String(port), '--issuer', issuer, '--clients',
                         path.join(S.tmp, 'idp-clients.json'), '--state-dir', path.join(S.tmp, 'idp-state')],
                        { cwd: path.dirname(IDP_JS) });
        p.stderr.pipe(fs.createWriteStream(path.join(S.tmp, 'idp.stderr')));
        const ok = await new Promise((resolve) => {
            let buf = '';
            const t = setTimeout(() => resolve(false), 60000);
            p.stdout.on('data', (d) => {
                buf += d;
                if (buf.includes('dev-idp ready ' + issuer)) { clearTimeout(t); resolve(true); }
            });
            p.on('exit', () => { clearTimeout(t); resolve(false); });
        });
        if (ok) {
            S.idp = p;
            S.issuer = issuer;
            return;
        }
        await killChild(p);
    }
    throw new Error('the dev IdP did not start: ' + fs.readFileSync(path.join(S.tmp, 'idp.stderr'), 'utf8'));
}

/* A bearer token for sub/email from the dev IdP's /dev/mint. */
function mint(sub, email) {
    return new Promise((resolve, reject) => {
        const body = JSON.stringify({ sub, email });
        const req = http.request(S.issuer + '/dev/mint', { method: 'POST', headers: { 'Content-Type': 'application/json',
                                                                                        'Content-Length': Buffer.byteLength(body) } }, (res) => {
            let b = '';
            res.on('data', (d) => { b += d; });
            res.on('end', () => {
                try {
                    resolve(JSON.parse(b).token);
                } catch (e) {
                    reject(new Error('/dev/mint: ' + b));
                }
            });
        });
        req.on('error', reject);
        req.end(body);
    });
}

async function startProxy() {
    S.port = await freePort();
    S.adminPort = await freePort();
    const cfg = {
        listen: [{ address: '127.0.0.1:' + S.port }],
        workers: 2,
        tls: { certificate: S.serverCrt, key: S.serverKey, device_ca: S.ca, crl: S.crl },
        access_log: path.join(S.tmp, 'access.log'),
        log_level: 'info',
        state_dir: path.join(S.tmp, 'state'),
        routes: [{ name: 'app', host: 'app.test', upstream: 'http://127.0.0.1:' + S.upstreamPort, auth: { mode: 'none' } },
                 { name: 'wiki', host: 'wiki.test', upstream: 'http://127.0.0.1:' + S.upstreamPort, auth: { mode: 'bearer' } }],
        identity: {
            providers: [{ name: 'staff', issuer: S.issuer, client_id: 'ztproxy', client_secret_file: 'idp-secret',
                          jwks_min_refresh: '1s', clock_skew: '5s' }],
            session: { keys: 'session-keys.json', lifetime: '12h', idle_timeout: '1h', login_timeout: '10m' },
            assertion: { keys_dir: 'assertion-keys', issuer: 'https://ztproxy.browser.test', lifetime: '60s' }
        },
        device_trust: { inventory: { file: 'inventory.json' } },
        policy: { rules: 'rules.json', directory: { file: 'directory.json' }, audit_log: 'audit.log', deny_details: true },
        admin: {
            listen: '127.0.0.1:' + S.adminPort,
            admin_groups: ['secops'],
            token_file: 'admin.tokens',
            console_dir: CONSOLE_DIR
        }
    };
    S.configPath = path.join(S.tmp, 'ztproxy.json');
    writeJson(S.configPath, cfg);
    const out = fs.openSync(path.join(S.tmp, 'proxy.stdout'), 'a');
    const err = fs.openSync(path.join(S.tmp, 'proxy.stderr'), 'a');
    S.proxy = spawn([ZTPROXY_BIN, '-c', S.configPath], { cwd: S.tmp, stdio: ['ignore', out, err] });
    fs.closeSync(out);
    fs.closeSync(err);
    await waitUntil(async () => {
        if (S.proxy.exitCode !== null) throw new Error('ztproxy exited (' + S.proxy.exitCode + '):\n' + proxyLog());
        return (await portAccepts(S.port)) && (await portAccepts(S.adminPort));
    }, 'ztproxy to listen on ' + S.port + ' and its admin listener on ' + S.adminPort);
}

function proxyLog() {
    try {
        return fs.readFileSync(path.join(S.tmp, 'proxy.stderr'), 'utf8').split('\n').slice(-40).join('\n');
    } catch (e) {
        return '(no log)';
    }
}

before(async () => {
    if (!fs.existsSync(ZTPROXY_BIN)) throw new Error(ZTPROXY_BIN + ' does not exist (build first)');
    if (!fs.existsSync(CHROMIUM)) throw new Error(CHROMIUM + ' is missing: run tools/setup.sh (Debian package chromium)');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    S.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-browser-'));
    const pki = path.join(S.tmp, 'pki');
    fs.mkdirSync(pki);
    const certs = path.join(SOURCE_DIR, 'certs');
    run(['bash', path.join(certs, 'make-ca.sh'), pki], pki);
    run(['bash', path.join(certs, 'make-server.sh'), pki, 'app.test', 'wiki.test', '127.0.0.1', 'localhost'], pki);
    for (const d of DEVICES) run(['bash', path.join(certs, 'make-device.sh'), pki, d], pki);
    // An empty CRL (the scripts write crl.pem when a device is revoked; make one up front).
    run(['bash', path.join(certs, 'make-crl.sh'), pki], pki);
    S.ca = path.join(pki, 'ca.crt');
    S.crl = path.join(pki, 'crl.pem');
    S.serverCrt = path.join(pki, 'server.crt');
    S.serverKey = path.join(pki, 'server.key');
    fs.chmodSync(S.serverKey, 0o600);
    S.deviceCrt = (d) => path.join(pki, 'devices', d + '.crt');
    S.deviceKey = (d) => path.join(pki, 'devices', d + '.key');
    writeJson(path.join(S.tmp, 'inventory.json'), inventory());
    writeJson(path.join(S.tmp, 'directory.json'), directory());
    writeJson(path.join(S.tmp, 'rules.json'), rulesV1());
    fs.writeFileSync(path.join(S.tmp, 'admin.tokens'), 'browser:' + TOKEN + '\n', { mode: 0o600 });
    fs.chmodSync(path.join(S.tmp, 'admin.tokens'), 0o600);
    fs.mkdirSync(path.join(S.tmp, 'assertion-keys'), { mode: 0o700 });
    await startUpstream();
    await startIdp();
    await startProxy();

    S.browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
               '--disable-extensions', '--disable-sync', '--no-first-run', '--mute-audio']
    });
    S.admin = 'https://127.0.0.1:' + S.adminPort;
    S.context = await S.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    S.page = await S.context.newPage();
    S.pageErrors = [];
    S.page.on('pageerror', (e) => S.pageErrors.push(e.message));
});

after(async () => {
    try {
        if (S.browser) await S.browser.close();
    } finally {
        await killChild(S.proxy);
        await killChild(S.upstream);
        await killChild(S.idp);
        if (S.tmp) {
            if (KEEP_TMP) process.stderr.write('kept ' + S.tmp + '\n');
            else fs.rmSync(S.tmp, { recursive: true, force: true });
        }
    }
});

// ----------------------------------------------------- clients and helpers
/* A request through the proxy with a device's certificate: {status, body, json}.
 * opts.host (default app.test), opts.token (a bearer token). */
function viaProxy(device, reqPath, opts) {
    const host = (opts && opts.host) || 'app.test';
    const headers = { Host: host, Accept: 'application/json' };
    if (opts && opts.token) headers.Authorization = 'Bearer ' + opts.token;
    return new Promise((resolve, reject) => {
        const req = https.request({
            host: '127.0.0.1', port: S.port, method: 'GET', path: reqPath, servername: host,
            headers,
            ca: fs.readFileSync(S.ca), cert: fs.readFileSync(S.deviceCrt(device)), key: fs.readFileSync(S.deviceKey(device)),
            agent: false
        }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d) => { body += d; });
            res.on('end', () => {
                let json = null;
                try { json = JSON.parse(body); } catch (e) { /* not JSON */ }
                resolve({ status: res.statusCode, body, json, headers: res.headers });
            });
        });
        req.on('error', reject);
        req.setTimeout(WAIT_MS, () => req.destroy(new Error('timeout')));
        req.end();
    });
}

/* The admin API with the token, from the test (not the browser). */
function adminApi(method, apiPath, body, headers) {
    return new Promise((resolve, reject) => {
        const h = Object.assign({ Authorization: 'Bearer ' + TOKEN, Accept: 'application/json' }, headers || {});
        let data = null;
        if (body !== undefined) {
            data = Buffer.from(JSON.stringify(body));
            h['Content-Type'] = 'application/json';
            h['Content-Length'] = data.length;
        }
        const req = https.request({ host: '127.0.0.1', port: S.adminPort, method, path: '/api/v1' + apiPath,
                                    headers: h, ca: fs.readFileSync(S.ca), servername: 'localhost', agent: false }, (res) => {
            let b = '';
            res.setEncoding('utf8');
            res.on('data', (d) => { b += d; });
            res.on('end', () => {
                let json = null;
                try { json = JSON.parse(b); } catch (e) { /* not JSON */ }
                resolve({ status: res.statusCode, json, body: b });
            });
        });
        req.on('error', reject);
        if (data) req.write(data);
        req.end();
    });
}

async function liveRules() {
    const r = await adminApi('GET', '/rules');
    assert.equal(r.status, 200, 'GET /rules: ' + r.body);
    return r.json;
}

async function shot(name) {
    const file = path.join(ARTIFACTS, name + '.png');
    await S.page.screenshot({ path: file, fullPage: true });
    return file;
}

async function statusText() {
    return (await S.page.textContent('#status')) || '';
}

async function setDraft(transform) {
    const page = S.page;
    const doc = JSON.parse(await page.inputValue('#rules-text'));
    transform(doc);
    await page.fill('#rules-text', JSON.stringify(doc, null, 2));
    // the list follows the draft (after a short debounce)
    await page.waitForFunction((expected) => {
        const item = document.querySelector('#rule-list .rule-item[data-rule-id="app-devices"]');
        return item && item.textContent.includes(expected);
    }, 'at least ' + doc.rules.find((r) => r.id === 'app-devices').when.device_tier.at_least, { timeout: WAIT_MS });
}

function ruleItem(id) {
    return S.page.locator('#rule-list .rule-item[data-rule-id="' + id + '"]');
}

// ------------------------------------------------------------------ tests
describe('security console in headless chromium', () => {
    test('the console loads and asks for a token; a bad token is refused', async () => {
        const page = S.page;
        const resp = await page.goto(S.admin + '/');
        assert.equal(resp.status(), 200);
        await page.waitForSelector('#page-signin:not([hidden])');
        await shot('signin');
        await page.fill('#signin-token', 'not-the-token');
        await page.click('#signin-submit');
        await page.waitForSelector('#signin-error:not([hidden])');
        assert.match(await page.textContent('#signin-error'), /refused/);
        assert.equal(await page.isHidden('#nav'), true);
        assert.equal(await page.isVisible('#signout'), false, 'no "Sign out" before signing in');
    });

    test('sign in with the admin token; decisions show a request made through the proxy', async () => {
        const page = S.page;
        const r = await viaProxy('laptop-a', '/hello-a');
        assert.equal(r.status, 200, 'laptop-a through the proxy: ' + r.body);
        await page.fill('#signin-token', TOKEN);
        await page.click('#signin-submit');
        await page.waitForSelector('#page-decisions:not([hidden])');
        assert.equal(await page.evaluate(() => sessionStorage.length), 1);
        // the live view picks it up by itself (polling every 2 s)
        await page.waitForSelector('#dec-body tr[data-device="laptop-a"][data-effect="allow"]', { timeout: WAIT_MS });
        const row = page.locator('#dec-body tr[data-device="laptop-a"]').first();
        assert.match(await row.textContent(), /app-devices/);
        assert.match(await row.textContent(), /\/hello-a/);
        await shot('decisions');
    });

    test('people on the wiki route: the decisions filter by user', async () => {
        const page = S.page;
        const alice = await mint('alice', 'alice@corp.example');
        const bob = await mint('bob', 'bob@corp.example');
        // The proxy fetches the provider's keys on first use: wait until alice gets in.
        await waitUntil(async () => (await viaProxy('laptop-a', '/wiki-alice', { host: 'wiki.test', token: alice })).status === 200,
                        'alice to reach the wiki with a bearer token');
        const r = await viaProxy('laptop-b', '/wiki-bob', { host: 'wiki.test', token: bob });
        assert.equal(r.status, 200, 'bob on the wiki: ' + r.body);
        const denied = await viaProxy('laptop-b', '/wiki-nobody', { host: 'wiki.test', token: await mint('mallory', 'mallory@evil.example') });
        assert.equal(denied.status, 403, 'someone outside the directory: ' + denied.body);
        await page.fill('#dec-user', 'alice@corp.example');
        await page.click('#dec-apply');
        await page.waitForFunction(() => {
            const rows = document.querySelectorAll('#dec-body tr[data-device]');
            return rows.length > 0 && Array.from(rows).every((r) => r.textContent.includes('alice@corp.example')) &&
                Array.from(rows).some((r) => r.textContent.includes('/wiki-alice'));
        }, null, { timeout: WAIT_MS });
        assert.equal(await page.locator('#dec-body tr', { hasText: 'bob@corp.example' }).count(), 0);
        await page.click('#dec-clear');
        await page.waitForSelector('#dec-body tr[data-effect="deny"]', { timeout: WAIT_MS });
        assert.match(await page.locator('#dec-body tr[data-effect="deny"]').first().textContent(), /wiki-nobody/);
        await shot('decisions');
    });

    test('an invalid rule is shown at that rule and changes nothing', async () => {
        const page = S.page;
        const before = await liveRules();
        await page.click('#nav-rules');
        await page.waitForSelector('#rule-list .rule-item[data-rule-id="app-devices"]');
        assert.match(await ruleItem('app-devices').textContent(), /device tier at least identified/);
        // A typo in the tier name.
        await setDraft((doc) => { doc.rules[1].when.device_tier.at_least = 'trustd'; });
        await page.click('#rules-validate');
        await page.waitForSelector('#rule-list .rule-item.has-error');
        const bad = page.locator('#rule-list .rule-item.has-error');
        assert.equal(await bad.count(), 1, 'exactly one rule is marked');
        assert.equal(await bad.getAttribute('data-rule-id'), 'app-devices');
        assert.match(await bad.locator('.rule-errors').textContent(), /trustd/);
        assert.equal(await ruleItem('block-embargoed').getAttribute('class'), 'rule-item deny');
        // Apply anyway: refused, the error stays at the rule, nothing changes.
        await page.fill('#apply-comment', 'typo on purpose');
        await page.click('#rules-apply');
        await page.waitForFunction(() => /Not applied/.test(document.getElementById('status').textContent), null, { timeout: WAIT_MS });
        assert.equal(await page.locator('#rule-list .rule-item.has-error[data-rule-id="app-devices"]').count(), 1);
        // "Edit in JSON" puts the cursor on that rule in the text.
        await bad.getByRole('button', { name: 'Edit rule app-devices in the JSON' }).click();
        const sel = await page.evaluate(() => {
            const ta = document.getElementById('rules-text');
            return document.activeElement === ta ? ta.value.slice(ta.selectionStart, ta.selectionEnd) : null;
        });
        assert.match(sel || '', /"id": "app-devices"/);
        await shot('rules-invalid');
        const afterRules = await liveRules();
        assert.equal(afterRules.version, before.version, 'the live version did not move');
        assert.deepEqual(afterRules.document, before.document);
        const r = await viaProxy('laptop-a', '/still-allowed');
        assert.equal(r.status, 200, 'the old rules still decide: ' + r.body);
    });

    test('the dry run against the fixed draft shows the decision and its reasons', async () => {
        const page = S.page;
        await setDraft((doc) => { doc.rules[1].when.device_tier.at_least = 'trusted'; });
        await page.click('#rules-validate');
        await page.waitForSelector('#validate-result.ok');
        assert.equal(await page.locator('#rule-list .rule-item.has-error').count(), 0);
        await page.fill('#dry-device', 'laptop-a');
        await page.fill('#dry-route', 'app');
        await page.fill('#dry-path', '/report');
        await page.fill('#dry-country', 'DE');
        // Against the live rules the same request is allowed ...
        await page.check('#dry-live');
        await page.click('#dry-run');
        await page.waitForSelector('#dry-rule', { timeout: WAIT_MS });
        assert.match(await page.textContent('#dry-result .decision-line'), /allow/);
        assert.equal(await page.textContent('#dry-rule'), 'app-devices');
        // ... against the draft it is denied, and the reasons say why.
        await page.check('#dry-draft');
        await page.click('#dry-run');
        await page.waitForFunction(() => /draft/.test(document.querySelector('#dry-result .decision-line').textContent), null, { timeout: WAIT_MS });
        assert.match(await page.textContent('#dry-result .decision-line'), /deny/);
        assert.equal(await page.textContent('#dry-rule'), 'default-deny');
        const reasons = await page.textContent('#dry-reasons');
        assert.match(reasons, /app-devices/);
        assert.match(reasons, /identified/);
        assert.match(reasons, /trusted/);
        // A person: bob on laptop-b reaching the wiki, from the live directory's groups.
        await page.fill('#dry-user', 'bob@corp.example');
        await page.fill('#dry-device', 'laptop-b');
        await page.fill('#dry-route', 'wiki');
        await page.click('#dry-run');
        await page.waitForFunction(() => /wiki-staff/.test(document.getElementById('dry-rule').textContent), null, { timeout: WAIT_MS });
        assert.match(await page.textContent('#dry-result .decision-line'), /allow/);
        assert.match(await page.textContent('#dry-reasons'), /group staff: member/);
        await page.fill('#dry-user', '');
        await page.fill('#dry-device', 'laptop-a');
        await page.fill('#dry-route', 'app');
        await page.click('#dry-run');
        await page.waitForFunction(() => /default-deny/.test(document.getElementById('dry-rule').textContent), null, { timeout: WAIT_MS });
    });

    test('what-if lists who loses access under the draft', async () => {
        const page = S.page;
        await page.click('#rules-whatif');
        await page.waitForSelector('#whatif-card:not([hidden])', { timeout: WAIT_MS });
        const losses = await page.textContent('#whatif-losses tbody');
        assert.match(losses, /laptop-a/);
        assert.match(losses, /app/);
        const routes = await page.textContent('#whatif-routes tbody');
        assert.match(routes, /app/);
        assert.match(routes, /wiki/);
        // Nobody on the wiki loses anything: the draft changes the app rule only.
        assert.doesNotMatch(losses, /alice|bob/);
        await shot('rules');
    });

    test('apply the fixed draft: the next request gets the new decision', async () => {
        const page = S.page;
        const before = await liveRules();
        await page.fill('#apply-comment', 'app needs trusted devices');
        await page.click('#rules-apply');
        await page.waitForFunction(() => /Applied/.test(document.getElementById('status').textContent), null, { timeout: WAIT_MS });
        const now = await liveRules();
        assert.notEqual(now.version, before.version);
        assert.equal(now.comment, 'app needs trusted devices');
        assert.equal(now.document.rules[1].when.device_tier.at_least, 'trusted');
        const r = await viaProxy('laptop-a', '/after-apply');
        assert.equal(r.status, 403, 'denied under the new rules: ' + r.body);
        await page.waitForSelector('#history-body tr[data-version="' + now.version + '"]', { timeout: WAIT_MS });
    });

    test('history shows the diff; rollback restores the old behaviour', async () => {
        const page = S.page;
        const live = await liveRules();
        const hist = await adminApi('GET', '/rules/history');
        assert.equal(hist.status, 200);
        const older = hist.json.versions.find((v) => v.version !== live.version);
        assert.ok(older, 'an older version in the history');
        const row = page.locator('#history-body tr[data-version="' + live.version + '"]');
        await row.getByRole('button', { name: /^Diff version \d+ with version/ }).click();
        await page.waitForSelector('#diff-view:not([hidden])', { timeout: WAIT_MS });
        assert.match(await page.textContent('#diff-summary'), /app-devices/);
        assert.match(await page.textContent('#diff-text'), /trusted/);
        const oldRow = page.locator('#history-body tr[data-version="' + older.version + '"]');
        await oldRow.getByRole('button', { name: /^Roll back/ }).click();
        await page.waitForSelector('#confirm[open]');
        await page.fill('#confirm-comment', 'back to identified');
        await page.click('#confirm-ok');
        await page.waitForFunction(() => /Rolled back/.test(document.getElementById('status').textContent), null, { timeout: WAIT_MS });
        const now = await liveRules();
        assert.notEqual(now.version, live.version);
        assert.equal(now.document.rules[1].when.device_tier.at_least, 'identified');
        const r = await viaProxy('laptop-a', '/after-rollback');
        assert.equal(r.status, 200, 'allowed again after the rollback: ' + r.body);
        await shot('rules-history');
    });

    test('a change made elsewhere meanwhile is not overwritten by an apply', async () => {
        const page = S.page;
        const live = await liveRules();
        assert.match(await page.textContent('#rules-live'), new RegExp('version ' + live.version + '\\b'));
        // Someone else applies a change through the API.
        const other = JSON.parse(JSON.stringify(live.document));
        other.rules[1].description = 'changed by someone else';
        const put = await adminApi('PUT', '/rules', { document: other, comment: 'from elsewhere' });
        assert.equal(put.status, 200, put.body);
        // The console's apply (based on the version it loaded) is refused.
        await setDraft((doc) => { doc.rules[1].description = 'my edit'; });
        await page.fill('#apply-comment', 'my stale edit');
        await page.click('#rules-apply');
        await page.waitForFunction(() => /someone changed the live rules/.test(document.getElementById('status').textContent), null, { timeout: WAIT_MS });
        const now = await liveRules();
        assert.equal(now.version, put.json.version);
        assert.equal(now.document.rules[1].description, 'changed by someone else');
        await page.click('#rules-reload');
        await page.waitForFunction((v) => new RegExp('version ' + v + '\\b').test(document.getElementById('rules-live').textContent),
                                   put.json.version, { timeout: WAIT_MS });
        assert.match(await ruleItem('app-devices').textContent(), /changed by someone else/);
    });

    test('mark a device lost: its next request is denied and the decisions show it', async () => {
        const page = S.page;
        const ok = await viaProxy('laptop-b', '/b-before');
        assert.equal(ok.status, 200, 'laptop-b before: ' + ok.body);
        await page.click('#nav-devices');
        await page.waitForSelector('#dev-body tr[data-device="laptop-b"]', { timeout: WAIT_MS });
        const row = page.locator('#dev-body tr[data-device="laptop-b"]');
        assert.match(await row.locator('.dev-status').textContent(), /active/);
        await row.getByRole('link', { name: 'laptop-b' }).click();
        await page.waitForSelector('#dev-detail:not([hidden])');
        assert.match(await page.textContent('#dev-detail-h'), /laptop-b/);
        await row.getByRole('button', { name: 'Mark laptop-b lost' }).click();
        await page.waitForSelector('#confirm[open]');
        // Cancel first: nothing changes.
        await page.click('#confirm-cancel');
        await page.waitForFunction(() => !document.getElementById('confirm').open);
        assert.equal((await viaProxy('laptop-b', '/b-after-cancel')).status, 200);
        await row.getByRole('button', { name: 'Mark laptop-b lost' }).click();
        await page.waitForSelector('#confirm[open]');
        await page.fill('#confirm-comment', 'reported lost at the airport');
        await page.click('#confirm-ok');
        await page.waitForFunction(() => /marked lost/.test(document.getElementById('status').textContent), null, { timeout: WAIT_MS });
        await page.waitForSelector('#dev-body tr[data-device="laptop-b"] .badge.lost', { timeout: WAIT_MS });
        await shot('devices');
        const denied = await viaProxy('laptop-b', '/b-after-lost');
        assert.equal(denied.status, 403, 'a lost device is refused: ' + denied.body);
        // laptop-a is not affected.
        assert.equal((await viaProxy('laptop-a', '/a-unaffected')).status, 200);
        // The decisions page shows the deny, filtered by device.
        await page.click('#nav-decisions');
        await page.fill('#dec-device', 'laptop-b');
        await page.selectOption('#dec-effect', 'deny');
        await page.click('#dec-apply');
        await page.waitForFunction(() => {
            const rows = document.querySelectorAll('#dec-body tr[data-device]');
            return rows.length > 0 && Array.from(rows).every((r) => r.dataset.device === 'laptop-b' && r.dataset.effect === 'deny') &&
                Array.from(rows).some((r) => r.textContent.includes('/b-after-lost'));
        }, null, { timeout: WAIT_MS });
        await shot('decisions-lost');
        // Mark it active again through the detail view.
        await page.click('#nav-devices');
        await page.locator('#dev-body tr[data-device="laptop-b"]').getByRole('button', { name: 'Mark laptop-b active' }).click();
        await page.waitForSelector('#confirm[open]');
        await page.click('#confirm-ok');
        await page.waitForFunction(() => /marked active/.test(document.getElementById('status').textContent), null, { timeout: WAIT_MS });
        assert.equal((await viaProxy('laptop-b', '/b-found')).status, 200, 'found again');
    });

    test('a CSRF attempt from another origin with the admin certificate is refused', async () => {
        // A browser context that holds an admin client certificate (ambient
        // credentials, like a cookie), visiting a page on another origin.
        const ctx = await S.browser.newContext({
            ignoreHTTPSErrors: true,
            clientCertificates: [{ origin: S.admin, certPath: S.deviceCrt('secops-1'), keyPath: S.deviceKey('secops-1') }]
        });
        const evilPort = await freePort();
        const target = S.admin + '/api/v1/devices/laptop-a/status';
        const evilHtml = '<!doctype html><title>cute cats</title>' +
            '<form id="f" method="POST" enctype="text/plain" action="' + target + '">' +
            '<input type="hidden" name=\'{"status":"lost","comment":"csrf","x":"\' value=\'"}\'></form>' +
            '<script>document.getElementById("f").submit()</script>';
        const evil = http.createServer((req, res) => {
            res.writeHead(200, { 'Content-Type': 'text/html' });
            res.end(evilHtml);
        });
        await new Promise((r) => evil.listen(evilPort, '127.0.0.1', r));
        try {
            const page = await ctx.newPage();
            // The certificate alone signs the admin in on the console itself.
            await page.goto(S.admin + '/');
            await page.waitForSelector('#nav:not([hidden])', { timeout: WAIT_MS });
            assert.match(await page.textContent('#who-text'), /certificate/);
            // The cross-site form POST.
            const respP = page.waitForResponse((r) => r.url() === target, { timeout: WAIT_MS });
            await page.goto('http://127.0.0.1:' + evilPort + '/');
            const resp = await respP;
            assert.equal(resp.status(), 403, 'the cross-site form POST is refused');
            // A cross-site fetch that smuggles JSON as text/plain (no-cors: no
            // preflight, the credentials go along): a rollback to the first version.
            const rulesBefore = await liveRules();
            const rollbackUrl = S.admin + '/api/v1/rules/rollback';
            await page.goto('http://127.0.0.1:' + evilPort + '/');
            const fetchRespP = page.waitForResponse((r) => r.url() === rollbackUrl, { timeout: WAIT_MS });
            await page.evaluate(async (url) => {
                try {
                    await fetch(url, { method: 'POST', mode: 'no-cors', credentials: 'include',
                                       headers: { 'Content-Type': 'text/plain' }, body: '{"version":1,"comment":"csrf"}' });
                } catch (e) { /* opaque either way */ }
            }, rollbackUrl);
            assert.equal((await fetchRespP).status(), 403, 'the cross-site fetch is refused');
            const rulesAfter = await liveRules();
            assert.equal(rulesAfter.version, rulesBefore.version, 'the rules did not move');
            const dev = await adminApi('GET', '/devices/laptop-a');
            assert.equal(dev.status, 200);
            assert.equal(dev.json.status, 'active', 'laptop-a is still active');
            assert.equal((await viaProxy('laptop-a', '/after-csrf')).status, 200);
            await page.close();
        } finally {
            await ctx.close();
            await new Promise((r) => evil.close(r));
        }
    });

    test('keyboard and labels: every field is labelled, the sections are reachable by keyboard', async () => {
        const page = S.page;
        const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll('input, select, textarea'))
            .filter((e) => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
            .map((e) => e.id || e.name || e.outerHTML.slice(0, 60)));
        assert.deepEqual(unlabelled, []);
        // Tab from the top of the page to the "Rules" link and follow it with Enter.
        await page.goto(S.admin + '/#decisions');
        await page.waitForSelector('#page-decisions:not([hidden])', { timeout: WAIT_MS });
        let reached = false;
        for (let i = 0; i < 10 && !reached; i++) {
            await page.keyboard.press('Tab');
            reached = await page.evaluate(() => document.activeElement && document.activeElement.id === 'nav-rules');
        }
        assert.ok(reached, 'the Rules link is reachable with Tab');
        await page.keyboard.press('Enter');
        await page.waitForSelector('#page-rules:not([hidden])', { timeout: WAIT_MS });
        // The status line is an aria-live region.
        assert.equal(await page.getAttribute('#status', 'aria-live'), 'polite');
    });

    test('sign out forgets the token', async () => {
        const page = S.page;
        await page.click('#signout');
        await page.waitForSelector('#page-signin:not([hidden])');
        assert.equal(await page.evaluate(() => sessionStorage.length), 0);
        assert.equal(await page.isHidden('#page-rules'), true);
        await page.reload();
        await page.waitForSelector('#page-signin:not([hidden])', { timeout: WAIT_MS });
        assert.equal(await page.isHidden('#nav'), true);
    });

    test('no script error on the pages', () => {
        assert.deepEqual(S.pageErrors, []);
    });

    test('ztproxy stops cleanly on SIGTERM, with no sanitizer report', async () => {
        const p = S.proxy;
        const exited = new Promise((resolve) => p.once('exit', (code, sig) => resolve({ code, sig })));
        process.kill(p.pid, 'SIGTERM');
        const { code, sig } = await exited;
        const log = fs.readFileSync(path.join(S.tmp, 'proxy.stderr'), 'utf8');
        const bad = log.split('\n').filter((l) => /ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer/.test(l));
        assert.deepEqual(bad, [], 'sanitizer report in the proxy log');
        assert.equal(sig, null, 'ztproxy was not killed by a signal:\n' + proxyLog());
        assert.equal(code, 0, 'ztproxy exit code:\n' + proxyLog());
    });
});
