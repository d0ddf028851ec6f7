// Helpers for smoke.sh (node stdlib only).
//
//   free-port                         print a free TCP port on 127.0.0.1
//   pkce                              print "<verifier> <S256 challenge>"
//   random                            print a random url-safe string
//   json FILE EXPR                    print a field of a JSON file (EXPR like .a.b or .a[0])
//   form-action FILE                  print the action of the first <form> in an HTML file
//   form-field FILE NAME              print the value of hidden input NAME
//   query URL NAME                    print a query parameter of URL
//   verify-jwt TOKEN JWKS_FILE [k=v…] verify a compact JWS against a JWKS and check
//                                     claims: k=v (string equality), k~v (array contains v),
//                                     k? (present), alg=/kid= check the header; prints payload
//   mtls-receiver PORT CERT KEY CA OUT  HTTPS server requiring a client cert chaining to CA;
//                                     appends each POSTed form body (JSON line) to OUT
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';

const [cmd, ...argv] = process.argv.slice(2);
const die = (msg) => {
  process.stderr.write(`smoke_helper: ${msg}\n`);
  process.exit(1);
};

function pick(obj, expr) {
  let cur = obj;
  for (const part of expr.match(/[^.[\]]+/g) || []) {
    if (cur == null) return undefined;
    cur = cur[part];
  }
  return cur;
}

function verifyJwt(token, jwks, checks) {
  const parts = token.split('.');
  if (parts.length !== 3) die('not a compact JWS');
  const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
  const payload = JSON.parse(Buffer.from(parts[1], 'base64url'));
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) die(`kid ${header.kid} not in JWKS`);
  if (jwk.alg && jwk.alg !== header.alg) die(`alg ${header.alg} does not match key alg ${jwk.alg}`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${parts[0]}.${parts[1]}`);
  const sig = Buffer.from(parts[2], 'base64url');
  let ok;
  switch (header.alg) {
    case 'RS256': ok = crypto.verify('sha256', data, key, sig); break;
    case 'PS256': ok = crypto.verify('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig); break;
    case 'ES256': ok = crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig); break;
    default: die(`unexpected alg ${header.alg}`);
  }
  if (!ok) die('signature does not verify');
  const now = Math.floor(Date.now() / 1000);
  if (typeof payload.exp === 'number' && payload.exp < now) die('token expired');
  for (const c of checks) {
    let m;
    if ((m = c.match(/^(alg|kid)=(.*)$/))) {
      if (header[m[1]] !== m[2]) die(`header ${m[1]}: want ${m[2]}, got ${header[m[1]]}`);
    } else if ((m = c.match(/^([^=~?]+)=(.*)$/))) {
      const got = pick(payload, m[1]);
      if (String(got) !== m[2]) die(`claim ${m[1]}: want ${m[2]}, got ${JSON.stringify(got)}`);
    } else if ((m = c.match(/^([^=~?]+)~(.*)$/))) {
      const got = pick(payload, m[1]);
      if (!Array.isArray(got) || !got.includes(m[2])) die(`claim ${m[1]}: want to contain ${m[2]}, got ${JSON.stringify(got)}`);
    } else if ((m = c.match(/^([^=~?]+)\?$/))) {
      if (pick(payload, m[1]) === undefined) die(`claim ${m[1]} missing`);
    } else {
      die(`bad check ${c}`);
    }
  }
  return { header, payload };
}

switch (cmd) {
  case 'free-port': {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      process.stdout.write(`${s.address().port}\n`);
      s.close();
    });
    break;
  }
  case 'pkce': {
    const verifier = crypto.randomBytes(32).toString('base64url');
    const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
    process.stdout.write(`${verifier} ${challenge}\n`);
    break;
  }
  case 'random':
    process.stdout.write(`${crypto.randomBytes(16).toString('base64url')}\n`);
    break;
  case 'json': {
    const v = pick(JSON.parse(fs.readFileSync(argv[0], 'utf8')), argv[1]);
    if (v === undefined) die(`${argv[1]} not found in ${argv[0]}`);
    process.stdout.write(`${typeof v === 'string' ? v : JSON.stringify(v)}\n`);
    break;
  }
  case 'form-action': {
    const m = fs.readFileSync(argv[0], 'utf8').match(/<form\b[^>]*\baction="([^"]*)"/i);
    if (!m) die(`no <form action> in ${argv[0]}`);
    process.stdout.write(`${m[1].replace(/&amp;/g, '&')}\n`);
    break;
  }
  case 'form-field': {
    const html = fs.readFileSync(argv[0], 'utf8');
    const re = new RegExp(`<input\\b[^>]*\\bname="${argv[1]}"[^>]*\\bvalue="([^"]*)"`, 'i');
    const m = html.match(re);
    if (!m) die(`no input ${argv[1]} in ${argv[0]}`);
    process.stdout.write(`${m[1]}\n`);
    break;
  }
  case 'query': {
    const v = new URL(argv[0]).searchParams.get(argv[1]);
    if (v === null) die(`no ${argv[1]} in ${argv[0]}`);
    process.stdout.write(`${v}\n`);
    break;
  }
  case 'verify-jwt': {
    const jwks = JSON.parse(fs.readFileSync(argv[1], 'utf8'));
    const { header, payload } = verifyJwt(argv[0], jwks, argv.slice(2));
    process.stdout.write(`${JSON.stringify({ header, payload })}\n`);
    break;
  }
  case 'mtls-receiver': {
    const [port, cert, key, ca, out] = argv;
    const server = https.createServer({
      cert: fs.readFileSync(cert),
      key: fs.readFileSync(key),
      ca: fs.readFileSync(ca),
      requestCert: true,
      rejectUnauthorized: true,
    }, (req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const peer = req.socket.getPeerCertificate();
        fs.appendFileSync(out, `${JSON.stringify({
          method: req.method,
          path: req.url,
          content_type: req.headers['content-type'],
          client_cert_cn: peer?.subject?.CN,
          body: Buffer.concat(chunks).toString('utf8'),
        })}\n`);
        res.writeHead(200, { 'cache-control': 'no-store' });
        res.end();
      });
    });
    server.listen(Number(port), '127.0.0.1', () => process.stdout.write('receiver ready\n'));
    process.on('SIGTERM', () => process.exit(0));
    break;
  }
  default:
    die(`unknown command ${cmd}`);
}
